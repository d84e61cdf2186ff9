"""Helpers shared by tests: a throwaway copy of the project, a throwaway MLflow store."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.tracking import fluent
from mlflow.tracking._tracking_service import utils as tracking_utils

from ssc_skin import model_grid
from ssc_skin.evaluation import report_html

PROJECT = Path(__file__).resolve().parents[1]


def copy_project(tmp_path: Path) -> Path:
    """The project's code and config (not its data, local config or MLflow store) in `tmp_path`,
    with empty data layers, so `kedro run` there leaves the real project untouched."""
    project = Path(tmp_path)
    project.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", ".telemetry", "README.md"):
        if (PROJECT / name).exists():
            shutil.copy(PROJECT / name, project / name)
    shutil.copytree(
        PROJECT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    shutil.copytree(PROJECT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    for layer in (PROJECT / "data").iterdir():
        if layer.is_dir():
            (project / "data" / layer.name).mkdir(parents=True)
    return project


def kedro(
    project: Path, *args: str, timeout: int = 1200, **env: str
) -> subprocess.CompletedProcess:
    """`kedro <args>` in `project` (telemetry off); the caller checks the return code."""
    environment = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", **env}
    return subprocess.run(
        [sys.executable, "-m", "kedro", *args],
        check=False,
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def tracking_uri(uri: str) -> Iterator[str]:
    """MLflow's global tracking URI set to `uri` for the block (the registry follows it), then
    put back as it was, unset included, so no later test writes into this store."""
    previous = tracking_utils._tracking_uri  # None when unset; get_tracking_uri() resolves it
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(previous)


@contextmanager
def mlflow_sandbox() -> Iterator[None]:
    """An in-process `KedroSession.run()` leaves global state behind: kedro-mlflow's tracking
    URI, active experiment and `MLFLOW_*` environment variables, a run left open when the run
    fails, `sys.path`, and the model grid of its environment. Put all of it back, so later
    tests see the process as it was."""
    environment, path = dict(os.environ), list(sys.path)
    experiment = fluent._active_experiment_id
    grid = dict(model_grid._ACTIVE)
    with tracking_uri(tracking_utils._tracking_uri or mlflow.get_tracking_uri()):
        try:
            yield
        finally:
            while mlflow.active_run() is not None:
                mlflow.end_run("FAILED")
            os.environ.clear()
            os.environ.update(environment)
            sys.path[:] = path
            fluent._active_experiment_id = experiment
            model_grid._ACTIVE.clear()
            model_grid._ACTIVE.update(grid)


@contextmanager
def sqlite_tracking(folder: Path) -> Iterator[str]:
    """MLflow pointed at a fresh SQLite store in `folder` for the block (runs go to its Default
    experiment)."""
    with tracking_uri(f"sqlite:///{Path(folder) / 'mlflow.db'}") as uri:
        yield uri


PNG = "data:image/png;base64,"
DATA_URI = re.compile(r"data:[\w/+.-]+;base64,([A-Za-z0-9+/=]+)")


def scannable_text(path: Path) -> str:
    """`path`'s text as a privacy check must read it: an embedded image's base64 is pixel data
    whose letters match an identifier by chance (`S0007` turned up in a figure of report.html),
    so each is replaced by its decoded bytes, where the image's own metadata still shows."""
    text = path.read_text(errors="replace")
    return DATA_URI.sub(lambda m: base64.b64decode(m.group(1)).decode("latin-1"), text)


def logged_report_problems(artifacts: Path, folder: str = "") -> list[str]:
    """What keeps the report logged in `artifacts/folder` from being read in MLflow: an image of
    report.html that is not embedded (MLflow shows an HTML artifact from a `blob:` URL, against
    which no relative link resolves) or not a PNG; an image of report.md not in its folder."""
    root = artifacts / folder
    page, text = (root / "report.html").read_text(), (root / "report.md").read_text()
    sources = re.findall(r'<img [^>]*src="([^"]*)"', page)
    problems = [f"report.html: {s[:40]} not embedded" for s in sources if not s.startswith(PNG)]
    problems += [
        "report.html: an embedded image is not a PNG"
        for s in sources
        if s.startswith(PNG) and base64.b64decode(s[len(PNG) :])[:4] != b"\x89PNG"
    ]
    links = report_html.image_links(text)
    if len(sources) != len(links):
        problems.append(f"report.html shows {len(sources)} images, report.md {len(links)}")
    problems += [f"report.md: {link} not logged" for link in links if not (root / link).is_file()]
    return problems
