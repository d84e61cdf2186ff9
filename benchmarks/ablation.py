"""Ablations on the default cohort: stain normalisation and segmentation gating.

Each variant is a real `kedro run` (in a temporary copy of the project, so `data/` here is left
alone) up to the CNN evaluations of both tasks, with one parameter changed. The table goes to
`data/08_reporting/ablations.{json,md}`, which the study report includes.

    .venv/bin/python benchmarks/ablation.py            # 4 variants, ~5 min each on 2 cores
    .venv/bin/python benchmarks/ablation.py --env test # tiny, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from project_copy import copy_project

PROJECT = Path(__file__).resolve().parents[1]
OUT = PROJECT / "data" / "08_reporting"
VARIANTS = {
    "macenko + segmentation (default)": {},
    "reinhard + segmentation": {"patches.stain.method": "reinhard"},
    "no stain normalisation + segmentation": {"patches.stain.method": "none"},
    "macenko, no segmentation gating": {"segmentation.selection.use_segmentation": "false"},
}
MODELS = ("binary.cnn", "three_class.cnn")
METRICS = (
    "test_patient_accuracy",
    "test_patient_balanced_accuracy",
    "test_patient_auc",
    "test_patch_accuracy",
    "train_patches",
)

logger = logging.getLogger("ablation")


def run_variant(params: dict[str, str], env: str | None) -> dict[str, dict[str, float]]:
    """One `kedro run` up to the CNN evaluations; their headline metrics."""
    with tempfile.TemporaryDirectory() as tmp:
        project = copy_project(Path(tmp))
        command = [
            sys.executable,
            "-m",
            "kedro",
            "run",
            "--to-outputs",
            ",".join(f"{m}.evaluation" for m in MODELS),
        ]
        if params:
            command += ["--params", ",".join(f"{k}={v}" for k, v in params.items())]
        if env:
            command += ["--env", env]
        environment = {
            **os.environ,
            "KEDRO_DISABLE_TELEMETRY": "1",
            "PYTHONPATH": str(project / "src"),
        }
        result = subprocess.run(
            command, cwd=project, env=environment, capture_output=True, text=True, check=False
        )
        if result.returncode:
            raise RuntimeError(f"kedro run failed for {params}:\n{result.stderr[-3000:]}")
        results = {}
        for model in MODELS:
            evaluation = json.loads(
                (project / f"data/08_reporting/{model}/evaluation.json").read_text()
            )
            results[model] = {k: evaluation.get(k) for k in METRICS}
        return results


def markdown(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        "| variant | model | test patient acc | balanced acc | AUC | test patch acc | "
        "train patches |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, models in results.items():
        for model, m in models.items():
            cells = [f"{100 * m[k]:.1f}" if m.get(k) is not None else "n/a" for k in METRICS[:2]]
            cells.append(
                f"{m['test_patient_auc']:.3f}" if m.get("test_patient_auc") is not None else "n/a"
            )
            cells.append(f"{100 * m['test_patch_accuracy']:.1f}")
            cells.append(str(m["train_patches"]))
            lines.append(f"| {variant} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default=None, help="Kedro environment (e.g. test)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    results = {}
    for n, (variant, params) in enumerate(VARIANTS.items(), start=1):
        start = time.perf_counter()
        results[variant] = run_variant(params, args.env)
        logger.info(
            "Ablation %d/%d, %s: %.0f s", n, len(VARIANTS), variant, time.perf_counter() - start
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablations.json").write_text(json.dumps(results, indent=2))
    (args.out / "ablations.md").write_text(markdown(results))
    logger.info("Wrote %s", args.out / "ablations.md")


if __name__ == "__main__":
    main()
