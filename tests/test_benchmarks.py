"""`benchmarks/run.py --quick` writes its tables (the benchmark harness itself, not a speed test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e  # two `kedro run` subprocesses: about a minute on 2 idle cores
def test_benchmark_quick_writes_json_and_markdown(tmp_path):
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}
    result = subprocess.run(
        [sys.executable, str(PROJECT / "benchmarks/run.py"), "--quick", "--out", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=PROJECT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((tmp_path / "benchmarks.json").read_text())
    assert {"tiling", "training", "inference", "predict", "memory"} <= set(data)
    assert len(data["memory"]["runs"]) == 2 and data["memory"]["runs"][0]["patches"] > 0
    markdown = (tmp_path / "benchmarks.md").read_text()
    assert markdown.startswith("# ") and "| " in markdown
