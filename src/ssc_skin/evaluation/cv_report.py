"""The cross-validation report: the study report's sections over pooled out-of-fold results,
with the per-fold spread beside them (`build_cv_markdown`)."""

from __future__ import annotations

import math
from typing import Any

from ssc_skin.evaluation.comparison import display_name
from ssc_skin.evaluation.report import (
    Facts,
    _num,
    _pct,
    accounting_section,
    calibration_section,
    comparison_section,
    figures_section,
    header_section,
    headline_section,
    patient_metrics_section,
    threshold_section,
    training_section,
    verdict_section,
)


def fold_spread_section(folds: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Per model, the spread of the fold-wise test patient accuracy and AUC beside the pooled
    numbers, then one row per fold."""
    lines = [
        "## Per-fold spread",
        "",
        "Each fold's model on its own test patients; the pooled table above is the one to "
        "quote, this shows how much a single split would have varied. A pooled AUC ranks "
        "patients scored by different fold models, so it sits below the per-fold AUCs when "
        "the folds' probability scales differ (accuracy does not depend on that).",
        "",
        "| task | model | folds | test patient accuracy: mean ± sd (min–max) | AUC: mean "
        "± sd (min–max) | per fold: accuracy (patients) |",
        "|---|---|---|---|---|---|",
    ]
    for name, evaluations in folds.items():
        done = [e for e in evaluations if "skipped" not in e]
        if not done:
            continue
        task, arch = name.rsplit(".", 1)
        cells = []
        for key in ("test_patient_accuracy", "test_patient_auc"):
            values = [
                e.get(key)
                for e in done
                if isinstance(e.get(key), int | float) and not math.isnan(e.get(key))
            ]
            if values:
                mean = sum(values) / len(values)
                sd = (sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5
                fmt = _pct if key.endswith("accuracy") else _num
                cells.append(f"{fmt(mean)} ± {fmt(sd)} ({fmt(min(values))}–{fmt(max(values))})")
            else:
                cells.append("n/a")
        per_fold = ", ".join(
            f"{_pct(e.get('test_patient_accuracy'))} ({e.get('test_patient_n', 'n/a')})"
            for e in done
        )
        lines.append(
            f"| {task} | {display_name(arch)} | {len(done)} | {cells[0]} | {cells[1]} "
            f"| {per_fold} |"
        )
    return [*lines, ""]


def build_cv_markdown(
    pooled: list[dict[str, Any]], folds: dict[str, list[dict[str, Any]]], run_facts: Facts
) -> str:
    """The cross-validation report: headline from the pooled out-of-fold predictions (every
    patient tested exactly once), the per-fold spread beside it, then the paired comparison,
    accounting, thresholds and calibration on the pooled predictions."""
    confidence = run_facts.get("confidence", 0.95)
    intro = (
        f"{run_facts.get('folds', 'k')}-fold patient-grouped, label-stratified "
        "cross-validation: each fold's models were trained and early-stopped without its "
        "test patients, and the out-of-fold predictions are pooled, so every patient of the "
        "cohort is tested exactly once and the intervals are over all of them."
    )
    lines = [
        *header_section(run_facts, "ssc-skin cross-validation report"),
        *headline_section(pooled, "Headline: every patient, pooled out-of-fold", intro),
        *verdict_section(pooled, run_facts.get("comparison") or {}, confidence),
        *fold_spread_section(folds),
        *comparison_section(run_facts.get("comparison") or {}, confidence),
        *accounting_section(pooled),
        *threshold_section(pooled),
        *calibration_section(pooled),
        *patient_metrics_section(pooled),
        *figures_section(),
        *training_section(pooled, curves=False),
    ]
    return "\n".join(lines)


# ---------- HTML ----------
