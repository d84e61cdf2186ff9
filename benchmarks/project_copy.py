"""A throwaway copy of the project for benchmark runs (code and config, not data or local
config), so a benchmark's `kedro run` never touches the real project's data or MLflow store."""

from __future__ import annotations

import shutil
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def copy_project(destination: Path) -> Path:
    shutil.copytree(
        PROJECT / "src",
        destination / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    shutil.copytree(PROJECT / "conf", destination / "conf", ignore=shutil.ignore_patterns("local"))
    (destination / "conf" / "local").mkdir()
    for name in ("pyproject.toml", ".telemetry"):
        if (PROJECT / name).exists():
            shutil.copy(PROJECT / name, destination / name)
    return destination
