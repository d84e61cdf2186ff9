from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from ssc_skin.pipelines.cv.nodes import (
    assign_folds,
    build_cv_report,
    covers_each_patient_once,
    pool_model,
    pool_selection,
    tag_fold_runs,
)
from tests.helpers import tracking_uri

BINARY = {
    "name": "binary",
    "classes": ["normal", "ssc"],
    "label_map": {"normal": "normal", "early": "ssc", "late": "ssc"},
}
PARAMS = {
    "bootstrap_metrics": ["accuracy", "auc"],
    "bootstrap_resamples": 20,
    "confidence": 0.95,
    "seed": 0,
}


def _manifest(per_class: int = 5) -> pd.DataFrame:
    rows = [
        {
            "image": f"im-{label}{k}-{i}",
            "patient": f"pt-{label}{k}",
            "label": label,
            "fixed_split": "test" if k == 0 else None,
        }
        for label in ("normal", "early", "late")
        for k in range(per_class)
        for i in range(2)
    ]
    return pd.DataFrame(rows)


def test_every_patient_is_tested_in_exactly_one_fold():
    manifest = _manifest()
    tables = assign_folds(manifest, {"val_fraction": 0.2, "seed": 1}, folds=5)
    assert len(tables) == 5
    tested = pd.concat([t[t["split"] == "test"] for t in tables])["patient"]
    assert sorted(tested) == sorted(manifest["patient"].unique())
    for table in tables:
        assert set(table["split"]) == {"train", "val", "test"}
        assert table.groupby("split")["label"].nunique().eq(3).all()
        assert len(table) == 15  # every patient in every fold, in one split


def test_too_few_patients_for_the_folds_names_the_class():
    with pytest.raises(ValueError, match="at least 5 patients"):
        assign_folds(_manifest(per_class=3), {"val_fraction": 0.2, "seed": 1}, folds=5)


def _fold_outputs(fold: int, tables: list[pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A model's predictions and the image selection of one fold (one patch per image)."""
    rng = np.random.default_rng(fold)
    split = tables[fold].set_index("patient")["split"]
    manifest = _manifest()
    rows, selection = [], []
    for r in manifest.itertuples():
        y = int(r.label != "normal")
        selection.append(
            {
                "image": r.image,
                "patient": r.patient,
                "label": r.label,
                "split": split[r.patient],
                "n_tiles": 1,
                "n_classified": 1,
                "selection": "ok",
                "reason": "",
            }
        )
        p = float(np.clip(0.5 + (0.3 if y else -0.3) + rng.normal(0, 0.1), 0.01, 0.99))
        rows.append(
            {
                "row": len(rows),
                "image": r.image,
                "patient": r.patient,
                "label": r.label,
                "split": split[r.patient],
                "y_true": y,
                "p_normal": 1 - p,
                "p_ssc": p,
            }
        )
    return pd.DataFrame(rows), pd.DataFrame(selection)


def test_pooled_evaluation_covers_every_patient_once():
    tables = assign_folds(_manifest(), {"val_fraction": 0.2, "seed": 1}, folds=3)
    outputs = [_fold_outputs(k, tables) for k in range(3)]
    selection = pool_selection(*[s for _, s in outputs])
    assert covers_each_patient_once(selection)
    summaries = [
        {
            "task": "binary",
            "architecture": "cnn",
            "classes": ["normal", "ssc"],
            "train_seconds": 2.0,
            "train_patches": 10,
            "epochs_run": 3,
            "parameters": 7,
            "patches_per_second": 5.0,
        }
    ] * 3
    metrics, summary, pooled = pool_model(
        BINARY, PARAMS, selection, *[p for p, _ in outputs], *summaries
    )
    assert summary["test_patients_total"] == summary["test_patient_n"] == 15
    assert summary["every_patient_tested_once"] is True
    assert summary["test_images_total"] == 30 and summary["train_seconds"] == 6.0
    assert len(summary["youden_thresholds"]) == 3
    assert set(pooled["split"]) == {"val", "test"} and set(pooled["fold"]) == {
        "fold_0",
        "fold_1",
        "fold_2",
    }
    assert metrics["test_patient_accuracy"]["value"] == summary["test_patient_accuracy"]
    text = build_cv_report(
        _manifest(),
        PARAMS,
        {},
        summary,
        *[{**summary, "test_patient_accuracy": a} for a in (0.6, 0.8, 1.0)],
        folds=3,
    )
    assert "| binary | CNN | 15/15 |" in text and "80.0 ± 20.0 (60.0–100.0)" in text


def test_a_skipped_model_stays_skipped_when_pooled():
    skipped = {
        "task": "three_class",
        "architecture": "cnn",
        "classes": ["a", "b", "c"],
        "skipped": "binary cohort",
    }
    _, summary, pooled = pool_model(
        BINARY, PARAMS, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), skipped, skipped
    )
    assert summary["skipped"] == "binary cohort" and pooled.empty


def test_fold_tags_name_each_models_nested_run(tmp_path):
    with tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}"):
        with mlflow.start_run():
            with mlflow.start_run(nested=True, run_name="binary.cnn") as child:
                pass
            tag_fold_runs(
                {"task": "binary", "architecture": "cnn", "mlflow_run_id": child.info.run_id},
                {"task": "x"},
                fold="fold_2",
            )
        run = mlflow.MlflowClient().get_run(child.info.run_id)
    assert run.data.tags["fold"] == "fold_2"
    assert run.info.run_name == "fold_2.binary.cnn"
