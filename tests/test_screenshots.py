"""`make screenshots` (scripts/screenshots.sh + servers.sh): servers stop with everything they
started, the ports are free afterwards, and a port a stale server holds stops the script
before it could photograph that server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def _bash(script: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **env},
        check=False,
    )


def test_stopping_a_server_stops_the_child_that_holds_its_port(tmp_path):
    # like `kedro viz run`: a parent process whose child serves the port
    port = _free_port()
    serve = (
        f"'{sys.executable}' -m http.server {port} --bind 127.0.0.1 & "
        f"echo \\$! > '{tmp_path}/child'; wait"
    )
    result = _bash(
        f"""
        source '{SCRIPTS}/servers.sh'
        start_group '{tmp_path}/log' bash -c "{serve}"
        for i in $(seq 1 200); do port_free {port} || break; sleep 0.1; done
        port_free {port} && {{ echo "the test server did not start" >&2; exit 2; }}
        stop_groups {port}
        """
    )
    assert result.returncode == 0, result.stderr
    child = int((tmp_path / "child").read_text())
    assert not _alive(child)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # the port is free


def test_a_port_still_taken_after_stopping_is_an_error(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = _bash(f"source '{SCRIPTS}/servers.sh'; stop_groups {port}", PORT_WAIT_TRIES="2")
    assert result.returncode == 1
    assert f"port {port} is still in use" in result.stderr


def test_the_screenshots_refuse_a_port_a_stale_server_holds(tmp_path):
    project = tmp_path / "MRN-4471-Smith_project"
    project.mkdir()
    (project / "mlflow.db").write_bytes(b"")
    with socket.socket() as stale:
        stale.bind(("127.0.0.1", 0))
        stale.listen()
        port = stale.getsockname()[1]
        result = subprocess.run(
            ["bash", str(SCRIPTS / "screenshots.sh"), str(project)],
            capture_output=True,
            text=True,
            timeout=120,
            env={
                **os.environ,
                "CHROMIUM": "/bin/true",
                "VIZ_PORT": str(port),
                "UI_PORT": str(_free_port()),
                "OUT": str(tmp_path / "docs"),
            },
            check=False,
        )
    assert result.returncode != 0
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert not (tmp_path / "docs").exists()  # nothing photographed, nothing written
