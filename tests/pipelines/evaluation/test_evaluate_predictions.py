"""`evaluate_predictions`: patch, image and patient metrics with intervals over patients."""

import numpy as np
import pandas as pd

from ssc_skin.pipelines.evaluation.nodes import evaluate_predictions

BINARY = {
    "name": "binary",
    "classes": ["normal", "ssc"],
    "label_map": {"normal": "normal", "early": "ssc", "late": "ssc"},
}


def test_evaluation_reports_patient_level_metrics_with_intervals():
    rng = np.random.default_rng(0)
    rows = []
    for split in ("train", "val", "test"):
        for p in range(6):
            y = p % 2
            for _ in range(4):
                p1 = float(np.clip(0.35 + 0.3 * y + rng.normal(0, 0.1), 0, 1))
                rows.append(
                    {
                        "image": f"{split}{p}",
                        "patient": f"{split}{p}",
                        "split": split,
                        "y_true": y,
                        "p_normal": 1 - p1,
                        "p_ssc": p1,
                    }
                )
    predictions = pd.DataFrame(rows)
    metrics, summary = evaluate_predictions(
        predictions,
        BINARY,
        {"task": "binary", "architecture": "cnn", "history": {}},
        {
            "bootstrap_metrics": ["accuracy"],
            "bootstrap_resamples": 100,
            "confidence": 0.95,
            "seed": 0,
        },
    )
    assert summary["test_patients"] == 6
    assert summary["test_patient_accuracy_ci_low"] <= summary["test_patient_accuracy"]
    assert summary["test_patient_accuracy"] <= summary["test_patient_accuracy_ci_high"]
    assert {"val_patch_accuracy", "val_image_auc", "test_patient_brier"} <= set(metrics)
    # Training patches are never scored (SCORED_SPLITS), even where a frame holds some.
    assert not any(name.startswith("train_") for name in metrics)
    assert metrics["test_patient_accuracy"]["value"] == summary["test_patient_accuracy"]
