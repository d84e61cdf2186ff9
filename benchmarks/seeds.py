"""Seed variation: one model retrained with 3 seeds on the same cohort, split and patches.

How much of a difference between two runs is the dice the training throws (initialisation,
shuffling, augmentation)? The cohort, the patient split, the stain normaliser and the UNet stay
fixed (run once); only `classification.training.seed` changes. Real `kedro run`s in a temporary
copy of the project, so `data/` here is left alone.

    .venv/bin/python benchmarks/seeds.py                       # binary.mobilenetv2, seeds 0 1 2
    .venv/bin/python benchmarks/seeds.py --model binary.cnn --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/seeds.py --env test            # tiny, for a smoke test

Writes data/08_reporting/seeds.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from project_copy import copy_project

PROJECT = Path(__file__).resolve().parents[1]
OUT = PROJECT / "data" / "08_reporting"
METRICS = (
    "test_patch_accuracy",
    "test_patient_accuracy",
    "test_patient_balanced_accuracy",
    "test_patient_auc",
    "test_patient_accuracy_all",
)

logger = logging.getLogger("seeds")


def _kedro(project: Path, args: list[str], env: str | None) -> None:
    command = [sys.executable, "-m", "kedro", "run", *args, *(["--env", env] if env else [])]
    environment = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(project / "src")}
    result = subprocess.run(
        command, cwd=project, env=environment, capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")


def run(model: str, seeds: list[int], env: str | None) -> dict[str, object]:
    """Patches and UNet once, then `model` trained and evaluated once per seed."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        project = copy_project(Path(tmp))
        start = time.perf_counter()
        _kedro(project, ["--to-outputs", "classifier_patch_index,image_selection"], env)
        logger.info("cohort, patches and UNet: %.0f s", time.perf_counter() - start)
        for seed in seeds:
            start = time.perf_counter()
            _kedro(
                project,
                [
                    "--from-nodes",
                    f"{model}.train_classifier",
                    "--to-outputs",
                    f"{model}.evaluation",
                    "--params",
                    f"classification.training.seed={seed}",
                ],
                env,
            )
            evaluation = json.loads(
                (project / f"data/08_reporting/{model}/evaluation.json").read_text()
            )
            results[seed] = {k: evaluation.get(k) for k in METRICS}
            results[seed]["test_patients"] = evaluation.get("test_patient_n")
            results[seed]["seconds"] = time.perf_counter() - start
            logger.info("seed %d: %s", seed, results[seed])
    return {"model": model, "env": env or "base", "seeds": results, "spread": spread(results)}


def spread(results: dict[int, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation, min and max of each metric over the seeds."""
    out = {}
    for metric in METRICS:
        values = [
            r[metric]
            for r in results.values()
            if isinstance(r.get(metric), int | float) and not math.isnan(r[metric])
        ]
        if not values:
            continue
        mean = sum(values) / len(values)
        sd = (sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5
        out[metric] = {
            "mean": mean,
            "sd": sd,
            "min": min(values),
            "max": max(values),
            "range": max(values) - min(values),
        }
    return out


def markdown(result: dict[str, object]) -> str:
    seeds = result["seeds"]
    lines = [
        f"Seed variation of `{result['model']}` (config env `{result['env']}`; cohort, "
        "split, stain normaliser and UNet fixed; only classification.training.seed "
        "changes):",
        "",
        "| seed | test patch acc (%) | test patient acc (%) | balanced acc (%) | AUC | "
        "test patients |",
        "|---|---|---|---|---|---|",
    ]
    for seed, r in seeds.items():
        lines.append(
            f"| {seed} | {_pct(r['test_patch_accuracy'])} "
            f"| {_pct(r['test_patient_accuracy'])} "
            f"| {_pct(r['test_patient_balanced_accuracy'])} "
            f"| {_num(r['test_patient_auc'])} | {r['test_patients']} |"
        )
    lines += ["", "| metric | mean | sd | min | max |", "|---|---|---|---|---|"]
    for metric, s in result["spread"].items():
        fmt = _num if metric.endswith("auc") else _pct
        lines.append(
            f"| {metric} | {fmt(s['mean'])} | {fmt(s['sd'])} | {fmt(s['min'])} | {fmt(s['max'])} |"
        )
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _num(value: float | None) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="binary.mobilenetv2", help="<task>.<architecture>")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--env", default=None, help="Kedro config env (e.g. test, cv)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = run(args.model, args.seeds, args.env)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "seeds.json").write_text(json.dumps(result, indent=2))
    (OUT / "seeds.md").write_text(markdown(result))
    print(markdown(result))  # noqa: T201 - a command-line report


if __name__ == "__main__":
    main()
