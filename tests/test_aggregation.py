"""One patient rule: the study's evaluation and predict / serving give the same patient call
from the same patch probabilities."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ssc_skin import aggregation
from ssc_skin.evaluation import scoring
from ssc_skin.inference import predict, serving

CLASSES = ["normal", "ssc"]

# One patient, two images: image A has 1 patch, confidently normal; image B has 4 patches,
# mildly ssc. Mean of image means: normal (0.55); mean over all patches: ssc (0.62).
PATCHES = {
    "A": np.array([[0.95, 0.05]]),
    "B": np.array([[0.3, 0.7], [0.35, 0.65], [0.25, 0.75], [0.3, 0.7]]),
}


def _study_patient_probability() -> np.ndarray:
    rows = [
        {"image": image, "patient": "PAT_0042", "y_true": 1, "p_normal": p[0], "p_ssc": p[1]}
        for image, probs in PATCHES.items()
        for p in probs
    ]
    _, mean, units = scoring.unit_probabilities(pd.DataFrame(rows), CLASSES, "patient")
    assert list(units) == ["PAT_0042"]
    return mean[0]


def _predict_patient_row() -> dict:
    image_rows = []
    for image, probs in PATCHES.items():
        row = serving.summarise(probs, CLASSES, 0.6)
        image_rows.append(
            {
                "level": "image",
                "image": image,
                "patient": "PAT_0042",
                "task": "binary",
                "architecture": "cnn",
                "runtime": "keras",
                "n_tissue_patches": len(probs),
                **row,
            }
        )
    model = predict.TaskModel("binary", "cnn", tuple(CLASSES), 32, "keras", None, None)
    table = predict.patient_means(pd.DataFrame(image_rows), [model], 0.6)
    return table.iloc[0].to_dict()


def test_predict_and_the_study_give_the_same_patient_probabilities_and_call():
    study = _study_patient_probability()
    served = _predict_patient_row()
    np.testing.assert_allclose([served["probability_normal"], served["probability_ssc"]], study)
    assert served["label"] == CLASSES[int(aggregation.decide(study))] == "ssc"
    assert served["n_patches"] == 5


def test_the_mean_of_image_means_would_have_called_this_patient_normal():
    """The case the rule decides: images with different patch counts."""
    image_means = np.stack([p.mean(axis=0) for p in PATCHES.values()])
    assert aggregation.decide(image_means.mean(axis=0)) == 0
    counts = np.array([len(p) for p in PATCHES.values()])
    pooled = aggregation.pooled_mean(image_means, counts)
    np.testing.assert_allclose(pooled, np.concatenate(list(PATCHES.values())).mean(axis=0))


def test_group_means_average_per_unit_and_count_patches():
    keys, mean, counts = aggregation.group_means(
        np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8]]), ["a", "a", "b"]
    )
    assert list(keys) == ["a", "b"] and list(counts) == [2, 1]
    np.testing.assert_allclose(mean, [[0.6, 0.4], [0.2, 0.8]])


def test_units_without_patches_do_not_count_and_none_gives_nan():
    pooled = aggregation.pooled_mean(np.array([[0.2, 0.8], [np.nan, np.nan]]), np.array([3, 0]))
    np.testing.assert_allclose(pooled, [0.2, 0.8])
    assert np.isnan(aggregation.pooled_mean(np.full((1, 2), np.nan), np.array([0]))).all()
