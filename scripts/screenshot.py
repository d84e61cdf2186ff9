"""Screenshots of web pages in headless Chromium, driven over the DevTools protocol.

`chromium --screenshot` alone cannot wait for pages that keep loading, nor close a welcome tour
or a side panel first; this drives one Chromium for all shots: load, wait, click by label,
type into a field, scroll, capture. Used by scripts/screenshots.sh; not part of the tests.

    python scripts/screenshot.py shots.json   # [{"name", "url", "out", "width", "height",
                                              #   "wait", "click": [...], "expand": css,
                                              #   "expect_row": run id, "type": [sel, text],
                                              #   "scroll_to": text}, ...]
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--hide-scrollbars",
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--remote-debugging-port=0",
    "about:blank",
]

CLICK = """(labels) => {  // a button's text or aria-label, or "css:<selector>"
  let clicked = 0;
  for (const l of labels.filter(l => l.startsWith('css:'))) {
    document.querySelectorAll(l.slice(4)).forEach(el => { el.click(); clicked++; });
  }
  for (const el of document.querySelectorAll('button, [role=button], [aria-label], a')) {
    const text = (el.innerText || '').trim(), label = el.getAttribute('aria-label') || '';
    if (labels.some(l => text === l || label === l)) { el.click(); clicked++; }
  }
  return clicked;
}"""

SCROLL = """(text) => {
  const el = [...document.querySelectorAll('h1,h2,h3,h4,span,div,button')]
    .find(e => (e.innerText || '').trim() === text);
  if (el) { el.scrollIntoView({block: 'start'}); return true; }
  return false;
}"""


EXPAND = """(selector) => {
  const el = document.querySelector(selector);
  if (el) { el.click(); return true; }
  return false;
}"""

HAS_ROW = """(id) => document.querySelector(`.ag-row[row-id="${id}"]`) !== null"""


class Page:
    """One tab of a Chromium started with a DevTools port; `call` sends one command."""

    def __init__(self, chromium: str, profile: Path) -> None:
        self.process = subprocess.Popen(
            [chromium, *FLAGS[:-1], f"--user-data-dir={profile}", FLAGS[-1]],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        for _ in range(200):
            if port_file.exists() and port_file.read_text().strip():
                break
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as response:
            target = next(t for t in json.load(response) if t["type"] == "page")
        self._stack = ExitStack()  # websockets wants connect() used as a context manager
        self.socket = self._stack.enter_context(
            connect(target["webSocketDebuggerUrl"], max_size=None)
        )
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def run(self, function: str, *args: Any) -> Any:
        expression = f"({function})(...{json.dumps(list(args))})"
        return (
            self.call("Runtime.evaluate", expression=expression, returnByValue=True)
            .get("result", {})
            .get("value")
        )

    def close(self) -> None:
        self._stack.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


def poll(check: Any, seconds: float, every: float = 1.0) -> bool:
    """Whether `check()` came true within `seconds` (pages keep loading after navigation)."""
    deadline = time.monotonic() + seconds
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)


def shoot(page: Page, shot: dict[str, Any]) -> None:
    page.call(
        "Emulation.setDeviceMetricsOverride",
        width=shot.get("width", 1600),
        height=shot.get("height", 1000),
        deviceScaleFactor=1,
        mobile=False,
    )
    page.call("Page.navigate", url=shot["url"])
    time.sleep(shot.get("wait", 8))
    for _ in range(2):  # a second pass closes what the first one opened behind
        if shot.get("click"):
            page.run(CLICK, shot["click"])
            time.sleep(1.5)
    if shot.get("expand"):  # the first match only, once: a second click folds it again
        clicked = poll(lambda: page.run(EXPAND, shot["expand"]), shot.get("expand_wait", 120))
        if shot.get("expect_row") and not (
            clicked and poll(lambda: page.run(HAS_ROW, shot["expect_row"]), 60)
        ):
            raise RuntimeError(
                f"{shot['name']}: row {shot['expect_row']} is not in the table (the row did "
                f"not expand: does {shot['expand']!r} still match MLflow's page?)"
            )
        time.sleep(1.5)
    if shot.get("type"):
        selector, text = shot["type"]
        page.run("(s) => document.querySelector(s).focus()", selector)
        page.call("Input.insertText", text=text)
        time.sleep(shot.get("after_type", 4))
    if shot.get("scroll_to"):
        page.run(SCROLL, shot["scroll_to"])
        time.sleep(1.5)
    time.sleep(shot.get("settle", 2))
    png = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
    Path(shot["out"]).write_bytes(png)


def main(spec: str) -> None:
    chromium = os.environ.get("CHROMIUM", "chromium")
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        page = Page(chromium, Path(profile))
        try:
            for shot in json.loads(Path(spec).read_text()):
                shoot(page, shot)
                print(f"{shot['out']}: {shot['url']}")  # noqa: T201
        finally:
            page.close()


if __name__ == "__main__":
    main(sys.argv[1])
