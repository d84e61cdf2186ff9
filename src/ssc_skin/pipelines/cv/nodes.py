"""Nodes of the `cv` pipeline: fold assignment, pooling of the out-of-fold predictions, the
cross-validation report, and fold tags on the models' MLflow runs."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from sklearn.model_selection import train_test_split

from ssc_skin import tracking
from ssc_skin.cohort import splits
from ssc_skin.evaluation import cv_report, scoring

logger = logging.getLogger(__name__)


def assign_folds(
    manifest: pd.DataFrame, params: dict[str, Any], *, folds: int, final: bool = False
) -> tuple[pd.DataFrame, ...]:
    """One patient-split table per fold: patient-grouped, label-stratified k folds, fold k the
    test patients of namespace `fold_k`, validation drawn from the other patients.

    Every patient is a test patient of exactly one fold (checked). A manifest's fixed splits
    do not apply: cross-validation tests every patient. With `final`, one more table: the final
    fit's train / val split of every patient (no test patients; the folds are the test).
    """
    cohort = manifest.rename(columns={"patient": "patient_id"})
    if "fixed_split" in cohort and cohort["fixed_split"].notna().any():
        logger.warning(
            "Cross-validation ignores the manifest's fixed splits: every patient is tested once"
        )
    tables = []
    for fold in range(folds):
        table = splits.kfold_split(cohort, folds, fold, params["val_fraction"], params["seed"])
        splits.assert_no_patient_leak(table)
        splits.assert_every_split_has_every_class(table)
        tables.append(
            table.rename(columns={"patient_id": "patient"}).assign(
                settings=f"cv folds={folds} fold={fold} val_fraction={params['val_fraction']} "
                f"seed={params['seed']}"
            )
        )
    tested = pd.concat([t[t["split"] == "test"] for t in tables])["patient"]
    if tested.duplicated().any() or set(tested) != set(manifest["patient"]):
        raise ValueError("cross-validation folds must test every patient exactly once")
    for fold, table in enumerate(tables):
        counts = table[table["split"] == "test"]["label"].value_counts().sort_index()
        logger.info(
            "Fold %d: test patients %s; train %d, val %d",
            fold,
            ", ".join(f"{k}={v}" for k, v in counts.items()),
            int((table["split"] == "train").sum()),
            int((table["split"] == "val").sum()),
        )
    if final:
        tables.append(final_split(manifest, params))
    return tuple(tables)


def final_split(manifest: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Every patient in train or val (label-stratified, `val_fraction` of them in val: early
    stopping, thresholds and the hybrid's weights), for the models a user deploys."""
    patients = splits.patient_table(manifest.rename(columns={"patient": "patient_id"}))
    n_val = max(patients["label"].nunique(), round(params["val_fraction"] * len(patients)))
    train, val = train_test_split(
        patients, test_size=n_val, stratify=patients["label"], random_state=params["seed"]
    )
    table = pd.concat([train.assign(split="train"), val.assign(split="val")])
    logger.info("Final fit: %d train and %d val patients, no test patients", len(train), len(val))
    return (
        table.sort_values("patient_id")
        .reset_index(drop=True)
        .rename(columns={"patient_id": "patient"})
        .assign(settings=f"final fit val_fraction={params['val_fraction']} seed={params['seed']}")
    )


def pool_selection(*selections: pd.DataFrame) -> pd.DataFrame:
    """Every fold's image-selection table, with its fold: the accounting of the pooled
    evaluation (each image is a test image of exactly one fold)."""
    return pd.concat(
        [s.assign(fold=f"fold_{k}") for k, s in enumerate(selections)], ignore_index=True
    )


def pool_model(
    task: dict[str, Any], params: dict[str, Any], selection: pd.DataFrame, *inputs: Any
) -> tuple[dict[str, Any], dict[str, Any], pd.DataFrame]:
    """One model's out-of-fold predictions pooled and scored by the study's evaluation code.

    `inputs`: the k folds' predictions, then their training summaries. The pooled frame keeps
    each fold's validation rows (each fold's screening threshold is chosen on its own
    validation patients) and test rows (every patient once).
    """
    half = len(inputs) // 2
    predictions, summaries = inputs[:half], inputs[half:]
    first = summaries[0]
    summary: dict[str, Any] = {
        "task": first["task"],
        "architecture": first["architecture"],
        "classes": list(first["classes"]),
        "folds": half,
    }
    skipped = [s["skipped"] for s in summaries if "skipped" in s]
    if skipped:
        return {}, {**summary, "skipped": skipped[0]}, pd.DataFrame()
    pooled = _pooled_frame(predictions)
    summary.update(scoring.score_model(pooled, selection, task, params, splits=("val", "test")))
    summary.update(_training_totals(summaries))
    summary["every_patient_tested_once"] = covers_each_patient_once(selection)
    logger.info("CV, pooled out-of-fold: %s", scoring.headline(summary))
    numeric = {k: {"value": v, "step": 0} for k, v in scoring.finite_numbers(summary).items()}
    return numeric, summary, pooled


def _pooled_frame(predictions: tuple[pd.DataFrame, ...]) -> pd.DataFrame:
    """Each fold's validation and test rows, tagged with the fold."""
    return pd.concat(
        [
            p[p["split"].isin(["val", "test"])].assign(fold=f"fold_{k}")
            for k, p in enumerate(predictions)
        ],
        ignore_index=True,
    )


def _training_totals(summaries: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """The k fits in one row: total seconds, mean patches and epochs, the model's parameters,
    mean throughput and where its weights came from."""
    totals: dict[str, Any] = {}
    for key in ("train_seconds", "train_patches", "epochs_run", "parameters"):
        values = [s.get(key) for s in summaries if isinstance(s.get(key), int | float)]
        if values:
            totals[key] = (
                sum(values)
                if key == "train_seconds"
                else values[0]
                if key == "parameters"
                else round(sum(values) / len(values))
            )
    totals["patches_per_second"] = sum(s.get("patches_per_second", 0) for s in summaries) / len(
        summaries
    )
    totals["weights_source"] = summaries[0].get("weights_source", "n/a")
    return totals


def covers_each_patient_once(selection: pd.DataFrame) -> bool:
    """Whether every patient of the cohort is a test patient of exactly one fold."""
    test = selection[selection["split"] == "test"]
    return bool(
        test.groupby("patient")["fold"].nunique().eq(1).all()
        and set(test["patient"]) == set(selection["patient"])
    )


def build_cv_report(
    manifest: pd.DataFrame,
    params: dict[str, Any],
    comparison: dict[str, Any],
    *inputs: dict[str, Any],
    folds: int,
) -> str:
    """The cross-validation report. `inputs`: the pooled evaluation of every model, then, model
    by model, its k per-fold evaluations."""
    n_models = len(inputs) // (folds + 1)
    pooled = list(inputs[:n_models])
    per_fold = inputs[n_models:]
    by_model = {
        f"{ev['task']}.{ev['architecture']}": list(per_fold[i * folds : (i + 1) * folds])
        for i, ev in enumerate(pooled)
    }
    per_class = manifest.groupby("label")["patient"].nunique()
    cohort = (
        f"{len(manifest)} images from {manifest['patient'].nunique()} patients ("
        + ", ".join(f"{k}: {v}" for k, v in per_class.items())
        + ")"
    )
    return cv_report.build_cv_markdown(
        pooled,
        by_model,
        {
            "cohort": cohort,
            "folds": folds,
            "comparison": comparison,
            "confidence": params.get("confidence", 0.95),
        },
    )


def tag_fold_runs(*evaluations: dict[str, Any], fold: str) -> None:
    """Name each model's nested MLflow run of this fold `<fold>.<task>.<arch>` and tag it with
    the fold, so that MLflow tells the k runs of one model apart. No-op without a run."""
    tracking.tag_fold_runs(evaluations, fold)
