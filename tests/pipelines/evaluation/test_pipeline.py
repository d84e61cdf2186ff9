"""The evaluation pipeline end to end over an in-memory catalog (SequentialRunner)."""

from __future__ import annotations

import numpy as np
import pytest
from kedro.runner import SequentialRunner

from ssc_skin.pipelines.evaluation import create_pipeline
from ssc_skin.pipelines.evaluation.pipeline import evaluated_namespaces

from .conftest import NOT_ASSESSABLE


@pytest.fixture(scope="module")
def finished(evaluation_catalog):
    pipeline = create_pipeline()
    SequentialRunner().run(pipeline, evaluation_catalog)
    return evaluation_catalog


def test_every_model_and_the_texture_peer_are_scored_by_the_same_code(finished):
    for namespace in evaluated_namespaces():
        evaluation = finished.load(f"{namespace}.evaluation")
        if namespace.endswith(".densenet"):  # declared, not enabled: passed through as skipped
            assert "not enabled" in evaluation["skipped"]
            continue
        assert evaluation["test_images_total"] == 12
        assert evaluation["test_images_assessed"] == 11
        assert evaluation["test_patients_total"] == evaluation["test_patients_assessed"] == 6
        assert {
            "test_patch_accuracy",
            "test_image_accuracy",
            "test_patient_accuracy",
            "test_patient_accuracy_all",
            "test_patch_ece",
        } <= set(evaluation)
        (missing,) = evaluation["test_not_assessed"]["images"]
        assert missing["image"] == NOT_ASSESSABLE and "no tissue tile" in missing["reason"]
        assert finished.load(f"{namespace}.metrics")["test_images_assessed"]["value"] == 11


def test_the_texture_peer_learns_the_colour_signal(finished):
    evaluation = finished.load("three_class.texture.evaluation")
    assert evaluation["architecture"] == "texture"
    assert evaluation["test_patch_accuracy"] > 0.9  # colour separates this toy cohort
    predictions = finished.load("three_class.texture.predictions")
    assert {"row", "image", "patient", "split", "y_true", "p_normal", "p_early", "p_late"} <= set(
        predictions.columns
    )
    np.testing.assert_allclose(predictions[["p_normal", "p_early", "p_late"]].sum(1), 1, rtol=1e-6)


def test_report_has_the_comparison_and_html_is_self_contained_where_it_can_be(finished):
    comparison = finished.load("model_comparison")
    assert "binary.mobilenetv2_vs_texture" in comparison
    assert "three_class.cnn_vs_texture" in comparison
    text = finished.load("report")
    assert "## Paired comparison on the same patients" in text
    assert f"image {NOT_ASSESSABLE}" in text
    assert "colour+texture LR" in text
    assert finished.load("report_html").startswith("<!DOCTYPE html>")
