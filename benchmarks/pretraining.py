"""Does offline pretraining help where data is scarce? Pooled cross-validation, measured.

A small synthetic cohort (default 7 patients per class: about 4 training patients per class in
each of 5 folds) is cross-validated for one model (default binary MobileNetV2) with random
initialisation and with backbones from `kedro run --pipeline pretrain` on another synthetic
cohort (other patients): self-supervised (SimCLR, no labels), or supervised on tissue
compartments and severity, or on compartments only. Everything else is
identical (cohort, folds, UNet, schedule); the pooled out-of-fold predictions of each variant
are compared on the same patients (exact McNemar, paired bootstrap AUC difference).

Real `kedro run`s (`--pipeline cv --to-outputs cv.<model>.evaluation`) in a temporary
copy of the project, so `data/` here is left alone.

    .venv/bin/python benchmarks/pretraining.py                  # ~25 min on 2 cores
    .venv/bin/python benchmarks/pretraining.py --patients 10 --variants random pretrained

Writes data/08_reporting/pretraining.{json,md}.
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

import pandas as pd
from project_copy import copy_project

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "src"))

from ssc_skin.evaluation import comparison  # noqa: E402

OUT = PROJECT / "data" / "08_reporting"
BACKBONE = "data/06_models/pretrained_backbone.keras"
VARIANTS = {  # name -> extra `--params` of the pretraining run (None: random init, no run)
    "random": None,
    # self-supervised on the unlabelled patches of the pretraining cohort (other patients)
    "simclr": ",pretrain.method=simclr",
    # supervised on the pretraining cohort's compartment shares and severity
    "pretrained": ",pretrain.method=supervised",
    "pretrained-compartment": ",pretrain.method=supervised,pretrain.targets=[compartment]",
}
METRICS = (
    "test_patient_accuracy",
    "test_patient_accuracy_ci_low",
    "test_patient_accuracy_ci_high",
    "test_patient_auc",
    "test_patient_auc_ci_low",
    "test_patient_auc_ci_high",
    "test_patient_balanced_accuracy",
    "test_patch_accuracy",
    "test_patient_n",
    "test_patients_total",
    "val_patient_balanced_accuracy",  # what a recipe is chosen on (validation patients)
    "val_patient_auc",
    "weights_source",
)

logger = logging.getLogger("pretraining")


def _kedro(project: Path, args: list[str]) -> float:
    command = [sys.executable, "-m", "kedro", "run", *args]
    environment = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(project / "src")}
    start = time.perf_counter()
    result = subprocess.run(
        command, cwd=project, env=environment, capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
    return time.perf_counter() - start


def run(model: str, patients: int, variants: list[str]) -> dict[str, object]:
    arch = model.split(".")[1]
    cohort = ",".join(
        f"cohort.synthetic.patients_per_class.{label}={patients}"
        for label in ("normal", "early", "late")
    )
    results, predictions = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        project = copy_project(Path(tmp))
        for variant in variants:
            targets = VARIANTS[variant]
            pretrain_seconds = 0.0
            if targets is not None:
                pretrain_seconds = _kedro(
                    project,
                    [
                        "--pipeline",
                        "pretrain",
                        "--params",
                        f"pretrain.architecture={arch}{targets}",
                    ],
                )
                summary = json.loads(
                    (project / "data/06_models/pretrained_backbone.json").read_text()
                )
                logger.info(
                    "%s: pretrained in %.0f s (%s)",
                    variant,
                    pretrain_seconds,
                    {
                        k: summary.get(k)
                        for k in ("method", "targets", "train_patches", "epochs_run")
                    },
                )
            weights = "null" if targets is None else BACKBONE
            seconds = _kedro(
                project,
                [
                    "--pipeline",
                    "cv",
                    "--to-outputs",
                    f"cv.{model}.evaluation",
                    "--params",
                    f"{cohort},classification.architectures.{arch}.options.weights={weights}",
                ],
            )
            evaluation = json.loads(
                (project / f"data/08_reporting/cv/{model}/evaluation.json").read_text()
            )
            results[variant] = {
                **{k: evaluation.get(k) for k in METRICS},
                "cv_seconds": seconds,
                "pretrain_seconds": pretrain_seconds,
            }
            predictions[variant] = pd.read_parquet(
                project / f"data/07_model_output/cv/{model}/oof_predictions.parquet"
            )
            logger.info("%s: %s", variant, results[variant])
    classes = [c.removeprefix("p_") for c in predictions[variants[0]].columns if c.startswith("p_")]
    pairs = {}
    for other in variants[1:]:
        pairs[f"{other}_vs_{variants[0]}"] = comparison.compare(
            other,
            predictions[other],
            variants[0],
            predictions[variants[0]],
            classes,
            {"bootstrap_resamples": 2000, "confidence": 0.95, "seed": 0},
        )
    return {
        "model": model,
        "patients_per_class": patients,
        "variants": results,
        "comparison": pairs,
    }


def _pct(value: object) -> str:
    return "n/a" if not isinstance(value, int | float) else f"{100 * value:.1f}"


def _num(value: object) -> str:
    return "n/a" if not isinstance(value, int | float) else f"{value:.3f}"


def markdown(result: dict[str, object]) -> str:
    lines = [
        f"Pretraining on a small cohort: `{result['model']}`, "
        f"{result['patients_per_class']} synthetic patients per class, 5-fold pooled "
        "cross-validation (`kedro run --pipeline cv`), every patient tested once.",
        "",
        "| variant | weights | test patient acc (%) [95% CI] | AUC [95% CI] | balanced "
        "acc (%) | test patch acc (%) | patients | CV run (s) | pretraining (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["variants"].items():
        lines.append(
            f"| {name} | {r['weights_source']} | {_pct(r['test_patient_accuracy'])} "
            f"[{_pct(r['test_patient_accuracy_ci_low'])}, "
            f"{_pct(r['test_patient_accuracy_ci_high'])}] | {_num(r['test_patient_auc'])} "
            f"[{_num(r['test_patient_auc_ci_low'])}, {_num(r['test_patient_auc_ci_high'])}] "
            f"| {_pct(r['test_patient_balanced_accuracy'])} | {_pct(r['test_patch_accuracy'])} "
            f"| {r['test_patient_n']}/{r['test_patients_total']} | {r['cv_seconds']:.0f} "
            f"| {r['pretrain_seconds']:.0f} |"
        )
    lines.append("")
    lines += [f"- {c['sentence']}" for c in result["comparison"].values()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="binary.mobilenetv2")
    parser.add_argument("--patients", type=int, default=7, help="per class")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = run(args.model, args.patients, args.variants)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "pretraining.json").write_text(json.dumps(result, indent=2, default=str))
    (OUT / "pretraining.md").write_text(markdown(result))
    print(markdown(result))  # noqa: T201 - a command-line report


if __name__ == "__main__":
    main()
