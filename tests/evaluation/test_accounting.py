import numpy as np
import pandas as pd
import pytest

from ssc_skin.evaluation import accounting

from .conftest import make_cohort


def _drop_image(predictions, selection, image, selection_value, reason):
    selection = selection.copy()
    at = selection["image"] == image
    selection.loc[at, "selection"] = selection_value
    selection.loc[at, "reason"] = reason
    selection.loc[at, "n_classified"] = 0
    return predictions[predictions["image"] != image], selection


def test_an_image_without_predictions_is_listed_with_its_reason():
    predictions, selection = make_cohort()
    predictions, selection = _drop_image(
        predictions, selection, "im-test1-0", "not_assessable", "no tissue tile in the image"
    )
    images = accounting.assessment(selection, predictions, "test")
    counts = accounting.counts(images, "test")
    assert counts["test_images_total"] == 8 and counts["test_images_assessed"] == 7
    assert counts["test_patients_total"] == 4 and counts["test_patients_assessed"] == 4
    missing = accounting.not_assessed(images)
    assert missing["images"] == [
        {
            "image": "im-test1-0",
            "patient": "pt-test1",
            "label": "early",
            "reason": "no tissue tile in the image",
        }
    ]
    assert missing["patients"] == []


def test_a_patient_none_of_whose_images_was_assessed_is_named():
    predictions, selection = make_cohort()
    for image in ("im-test2-0", "im-test2-1"):
        predictions, selection = _drop_image(
            predictions, selection, image, "not_assessable", "glass only"
        )
    images = accounting.assessment(selection, predictions, "test")
    assert accounting.counts(images, "test")["test_patients_assessed"] == 3
    (patient,) = accounting.not_assessed(images)["patients"]
    assert patient["patient"] == "pt-test2" and "glass only" in patient["reason"]


def test_an_image_selected_but_not_predicted_still_gets_a_reason():
    predictions, selection = make_cohort()
    predictions = predictions[predictions["image"] != "im-test0-1"]
    images = accounting.assessment(selection, predictions, "test")
    (row,) = accounting.not_assessed(images)["images"]
    assert "no prediction" in row["reason"] and "selection: ok" in row["reason"]


def test_fallback_images_are_assessed_and_counted_as_flagged():
    predictions, selection = make_cohort()
    selection.loc[selection["image"] == "im-test3-0", "selection"] = "gating_fallback"
    selection.loc[selection["image"] == "im-test0-0", "selection"] = "tissue_fallback"
    counts = accounting.counts(accounting.assessment(selection, predictions, "test"), "test")
    assert counts["test_images_assessed"] == 8 and counts["test_images_flagged"] == 2
    assert counts["test_images_gating_fallback"] == 1
    assert counts["test_images_tissue_fallback"] == 1
    assert counts["test_patients_flagged"] == 2


def test_predicted_images_missing_from_the_selection_are_not_lost():
    predictions, selection = make_cohort()
    selection = selection[selection["image"] != "im-test0-0"]
    images = accounting.assessment(selection, predictions, "test")
    assert len(images) == 8 and images["assessed"].all()


def test_intention_to_diagnose_counts_unassessed_as_wrong():
    y = np.array([0, 0, 1, 1, 1])
    predicted = np.array([0, -1, 1, 1, -1])  # two not assessed
    result = accounting.intention_to_diagnose(y, predicted, ["normal", "ssc"])
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["correct"] == 3 and result["n"] == 5
    assert result["sensitivity_normal"] == 0.5
    assert result["balanced_accuracy"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert result["accuracy_ci_low"] < 0.6 < result["accuracy_ci_high"]


def test_stand_in_selection_lists_each_predicted_image_once():
    predictions, _ = make_cohort(patients_per_split=2, images=2, patches=3)
    selection = accounting.selection_from_predictions(predictions)
    assert len(selection) == 12 and set(selection["selection"]) == {"ok"}
    assert selection.set_index("image").loc["im-val1-0", "n_classified"] == 3
    assert list(selection.columns) == list(accounting.SELECTION_COLUMNS)
    assert isinstance(selection, pd.DataFrame)
