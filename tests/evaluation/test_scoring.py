import numpy as np
import pandas as pd
import pytest

from ssc_skin.evaluation import scoring

from .conftest import BINARY, PARAMS, make_cohort


def test_every_level_and_split_is_scored_with_counts():
    predictions, selection = make_cohort()
    summary = scoring.score_model(predictions, selection, BINARY, PARAMS)
    for split in ("train", "val", "test"):
        for level in ("patch", "image", "patient"):
            assert f"{split}_{level}_accuracy" in summary
    assert summary["test_patch_n"] == 24 and summary["test_image_n"] == 8
    assert summary["test_patient_n"] == summary["test_patients_total"] == 4
    assert summary["test_patient_accuracy"] == summary["test_patient_accuracy_all"] == 1.0
    assert summary["test_not_assessed"] == {"images": [], "patients": []}
    assert {
        "test_patient_accuracy_ci_low",
        "test_patient_auc_ci_high",
        "test_patch_ece",
        "test_patient_ece",
        "val_patient_youden_threshold",
    } <= set(summary)


def test_not_assessable_images_lower_the_all_images_accuracy_only():
    predictions, selection = make_cohort()
    lost = ["im-test1-0", "im-test1-1"]  # every image of one test patient
    selection.loc[selection["image"].isin(lost), ["selection", "reason"]] = [
        "not_assessable",
        "no tissue tile",
    ]
    predictions = predictions[~predictions["image"].isin(lost)]
    summary = scoring.score_model(predictions, selection, BINARY, PARAMS)
    assert summary["test_patient_accuracy"] == 1.0  # over the 3 assessed patients
    assert summary["test_patient_n"] == 3
    assert summary["test_patient_accuracy_all"] == pytest.approx(3 / 4)
    assert summary["test_patient_correct_all"] == 3 and summary["test_patient_n_all"] == 4
    assert summary["test_image_accuracy_all"] == pytest.approx(6 / 8)
    assert summary["test_patient_sensitivity_ssc_all"] == pytest.approx(1 / 2)
    assert summary["test_patient_accuracy_all_ci_low"] < 0.75
    assert [p["patient"] for p in summary["test_not_assessed"]["patients"]] == ["pt-test1"]


def test_youden_threshold_from_validation_moves_the_test_calls():
    predictions, selection = make_cohort()
    # a model that puts every probability 0.45 too low: at 0.5 every SSc patient is missed
    shifted = predictions.assign(p_ssc=lambda f: (f["p_ssc"] - 0.45).clip(0.01, 0.99))
    shifted["p_normal"] = 1 - shifted["p_ssc"]
    summary = scoring.score_model(shifted, selection, BINARY, PARAMS)
    assert summary["test_patient_screen_sensitivity_default"] == 0.0
    assert summary["val_patient_youden_threshold"] < 0.5
    assert summary["test_patient_screen_sensitivity_youden"] >= 0.5
    assert summary["test_patient_screen_specificity_youden"] == 1.0
    assert summary["test_patient_screen_n_youden"] == 4


def test_pooled_folds_keep_recurring_validation_patients_apart():
    frames, selections = [], []
    for fold in range(2):
        predictions, selection = make_cohort(seed=fold)
        # each fold tests other patients; validation patients recur in both folds
        rename = {f"pt-test{k}": f"pt-test{k}-f{fold}" for k in range(4)}
        predictions["patient"] = predictions["patient"].replace(rename)
        selection["patient"] = selection["patient"].replace(rename)
        for frame in (predictions, selection):
            frame.loc[frame["split"] == "test", "image"] += f"-f{fold}"
        frames.append(predictions.assign(fold=f"fold_{fold}"))
        selections.append(selection.assign(fold=f"fold_{fold}"))
    pooled = pd.concat(frames, ignore_index=True)
    summary = scoring.score_model(
        pooled, pd.concat(selections, ignore_index=True), BINARY, PARAMS, splits=("test",)
    )
    assert summary["test_patients_total"] == summary["test_patient_n"] == 8
    assert len(summary["youden_thresholds"]) == 2  # one per fold, each from its own val
    assert "val_patient_accuracy" not in summary


def test_pooled_frames_need_a_fold_column_on_both_sides():
    predictions, selection = make_cohort()
    with pytest.raises(ValueError, match="fold"):
        scoring.score_model(predictions.assign(fold="fold_0"), selection, BINARY, PARAMS)


def test_without_a_selection_table_every_predicted_image_counts():
    predictions, _ = make_cohort()
    summary = scoring.score_model(predictions.drop(columns="label"), None, BINARY, PARAMS)
    assert summary["test_images_total"] == summary["test_images_assessed"] == 8


def test_finite_numbers_drop_nan_bools_and_lists():
    numbers = scoring.finite_numbers(
        {"a": 1, "b": float("nan"), "c": True, "d": [1], "e": np.float64(0.5)}
    )
    assert numbers == {"a": 1.0, "e": 0.5}
