"""Peak RSS of the cohort and patches stages at two cohort sizes (part of `benchmarks/run.py`).

Each size runs in a temporary copy of the project (data/ here is left alone): first
`kedro run --pipelines cohort`, then `kedro run --pipelines patches` on what it wrote, each in
its own process, so the patches stage's peak is its own and not the synthetic generator's
(which builds the whole cohort in memory before the catalog writes it). The imports alone
give the floor every run starts from; the ratio above that floor is the headline.

    .venv/bin/python benchmarks/stage_memory.py [--patients 6 24] [--image-size 512]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

PROJECT = Path(__file__).resolve().parents[1]
LABELS = ("normal", "early", "late")
STAGES = ("cohort", "patches")
logger = logging.getLogger("benchmarks")

# Runs a command and writes its peak RSS. A child forked straight from a large process would
# report at least that process's RSS: Linux carries the high-water mark across exec.
_PEAK_RSS = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def _copy_project(project: Path) -> None:
    shutil.copytree(
        PROJECT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    shutil.copytree(PROJECT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    shutil.copy(PROJECT / "pyproject.toml", project / "pyproject.toml")


def _measure(project: Path, name: str, command: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of `command` run in `project`, from a small wrapper process
    whose `getrusage(RUSAGE_CHILDREN)` is the command's own peak."""
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(project / "src")}
    log, peak = project / f"{name}.log", project / f"{name}.peak_rss"
    start = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.call(
            [sys.executable, "-c", _PEAK_RSS, str(peak), *command],
            cwd=project,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    seconds = time.perf_counter() - start
    if code:
        raise RuntimeError(f"{name} failed ({code}):\n" + log.read_text()[-3000:])
    # Linux reports ru_maxrss in KiB, macOS in bytes
    return int(peak.read_text()) / (2**20 if sys.platform == "darwin" else 2**10), seconds


def imports_floor() -> dict[str, Any]:
    """The project's imports alone: the floor every `kedro run` starts from."""
    logger.info("memory: imports only")
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        _copy_project(project)
        code = "from ssc_skin.pipeline_registry import register_pipelines; register_pipelines()"
        peak, seconds = _measure(project, "imports", [sys.executable, "-c", code])
    return {"run": "imports only", "peak_rss_mb": peak, "seconds": seconds}


def stages_at(patients: int, images_per_patient: int, image_size: int) -> dict[str, Any]:
    """Peak RSS and seconds of the cohort stage, then of the patches stage, for one size."""
    params = {f"patients_per_class.{c}": patients for c in LABELS}
    params.update(images_per_patient=images_per_patient, image_size=image_size)
    overrides = ",".join(f"cohort.synthetic.{k}={v}" for k, v in params.items())
    row: dict[str, Any] = {"run": f"{patients} patients/class", "patients_per_class": patients}
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        _copy_project(project)
        for stage in STAGES:
            logger.info("memory: kedro run --pipelines %s, %d patients/class", stage, patients)
            command = [sys.executable, "-m", "kedro", "run", "--pipelines", stage]
            peak, seconds = _measure(project, stage, [*command, "--params", overrides])
            row[f"{stage}_peak_rss_mb"], row[f"{stage}_seconds"] = peak, seconds
            logger.info("memory: %s stage: peak RSS %.0f MB, %.1f s", stage, peak, seconds)
        manifest = pd.read_csv(project / "data/02_intermediate/manifest.csv")
        index = pd.read_parquet(project / "data/05_model_input/patch_index.parquet")
        patch_files = (project / "data/05_model_input/patches").glob("*.npy")
        row.update(
            images=len(manifest),
            patches=len(index),
            image_size=image_size,
            patch_mb=sum(f.stat().st_size for f in patch_files) / 2**20,
            peak_rss_mb=max(row[f"{stage}_peak_rss_mb"] for stage in STAGES),
        )
    return row


def bench_memory(
    patients: tuple[int, ...],
    images_per_patient: int,
    image_size: int,
    floor: bool = True,
    concurrent: bool = False,
) -> dict[str, Any]:
    """Both sizes (the first and last of `patients`) and the floor; ratios of the largest to the
    smallest, per stage and above the floor. `concurrent` runs the sizes side by side (--quick:
    peaks stay meaningful, times do not)."""
    jobs = [lambda p=p: stages_at(p, images_per_patient, image_size) for p in patients]
    if concurrent:
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            rows = list(pool.map(lambda job: job(), jobs))
    else:
        rows = [job() for job in jobs]
    small, large = rows[0], rows[-1]
    result: dict[str, Any] = {
        "runs": rows,
        "concurrent": concurrent,
        "images_ratio": large["images"] / small["images"],
        "patches_ratio": large["patches"] / max(small["patches"], 1),
        "peak_rss_ratio": large["peak_rss_mb"] / small["peak_rss_mb"],
        "imports_only_peak_rss_mb": None,
    }
    for stage in STAGES:
        key = f"{stage}_peak_rss_mb"
        result[f"{stage}_peak_rss_ratio"] = large[key] / small[key]
    if floor:
        base = imports_floor()["peak_rss_mb"]
        result["imports_only_peak_rss_mb"] = base
        for stage in STAGES:
            key = f"{stage}_peak_rss_mb"
            result[f"{stage}_above_imports_ratio"] = (large[key] - base) / max(
                small[key] - base, 1.0
            )
        result["above_imports_ratio"] = result["patches_above_imports_ratio"]
    return result


def headline_rows(memory: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(benchmark, baseline, project, ratio) rows for `benchmarks/run.py`'s table."""
    small, large = memory["runs"][0], memory["runs"][-1]
    base = memory["imports_only_peak_rss_mb"]
    rows = []
    for stage, unit in (("patches", "patches"), ("cohort", "images")):
        key = f"{stage}_peak_rss_mb"
        ratio = (
            f"{memory[f'{stage}_peak_rss_ratio']:.2f}x for {memory[f'{unit}_ratio']:.1f}x {unit}"
        )
        rows.append(
            (
                f"{stage} stage peak RSS, MB",
                f"{small[unit]} {unit} {small[key]:.0f}",
                f"{large[unit]} {unit} {large[key]:.0f}",
                ratio,
            )
        )
        if base is not None:
            rows.append(
                (
                    f"the same, above the imports' {base:.0f} MB",
                    f"{small[key] - base:.0f}",
                    f"{large[key] - base:.0f}",
                    f"{memory[f'{stage}_above_imports_ratio']:.2f}x",
                )
            )
    return rows


def markdown_rows(memory: dict[str, Any]) -> list[str]:
    """The memory detail table."""
    lines = [
        "| patients/class | images | patches | patch files MB | cohort stage peak RSS MB | "
        "patches stage peak RSS MB | cohort s | patches s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['patients_per_class']} | {r['images']} | {r['patches']} | {r['patch_mb']:.0f} | "
        f"{r['cohort_peak_rss_mb']:.0f} | {r['patches_peak_rss_mb']:.0f} | "
        f"{r['cohort_seconds']:.0f} | {r['patches_seconds']:.0f} |"
        for r in memory["runs"]
    ]
    if memory["imports_only_peak_rss_mb"] is not None:
        lines.append(
            f"| imports only | - | - | - | {memory['imports_only_peak_rss_mb']:.0f} | "
            f"{memory['imports_only_peak_rss_mb']:.0f} | - | - |"
        )
    if memory["concurrent"]:
        lines += ["", "(--quick runs both sizes side by side: their times are not comparable.)"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, nargs=2, default=(6, 24))
    parser.add_argument("--images-per-patient", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=512)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S"
    )
    memory = bench_memory(tuple(args.patients), args.images_per_patient, args.image_size)
    sys.stdout.write(json.dumps(memory, indent=2) + "\n")
    sys.stdout.write("\n".join(f"| {' | '.join(row)} |" for row in headline_rows(memory)) + "\n")
    sys.stdout.write("\n".join(markdown_rows(memory)) + "\n")


if __name__ == "__main__":
    main()
