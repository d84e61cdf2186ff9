"""The `classification` pipeline: one modular pipeline per task x architecture namespace."""

import keras
import numpy as np
import pandas as pd
import pytest

from ssc_skin.constants import Skipped
from ssc_skin.models import tta
from ssc_skin.models.tasks import encode_labels
from ssc_skin.pipelines.classification.pipeline import create_pipeline
from tests.pipelines.runner import run_pipeline

BINARY = {
    "name": "binary",
    "classes": ["normal", "ssc"],
    "label_map": {"normal": "normal", "early": "ssc", "late": "ssc"},
}
THREE = {
    "name": "three_class",
    "classes": ["normal", "early", "late"],
    "label_map": {"normal": "normal", "early": "early", "late": "late"},
}


def _tiny_cnn_params(**training) -> dict:
    """A binary-only task, a 16 px CNN and a one-epoch schedule (`training` on top)."""
    return {
        "params:classification.tasks.binary": {
            **BINARY,
            "label_map": {"normal": "normal", "ssc": "ssc"},
        },
        "params:classification.architectures.cnn": {
            "name": "cnn",
            "input_size": 16,
            "options": {"filters": [4], "dense_units": 8, "dropout": 0.0},
        },
        "params:classification.training": {
            "epochs": 1,
            "batch_size": 16,
            "learning_rate": 0.001,
            "patience": 1,
            "seed": 0,
            "max_train_patches": None,
            **training,
        },
    }


def test_binary_task_maps_early_and_late_to_ssc():
    y = encode_labels(pd.Series(["normal", "early", "late"]), BINARY)
    np.testing.assert_array_equal(y, [0, 1, 1])


def test_label_outside_the_task_is_named():
    with pytest.raises(ValueError, match="mild"):
        encode_labels(pd.Series(["normal", "mild"]), BINARY)


def test_the_classification_pipeline_trains_each_namespace_on_an_in_memory_catalog():
    """The CNN namespaces of both tasks on a binary-only cohort: binary trains, the 3-class
    task is skipped with its reason (the labels cannot express it)."""
    rng = np.random.default_rng(0)
    n = 48
    labels = np.tile(["normal", "ssc"], n // 2)
    images = rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8)
    images[labels == "ssc"] //= 2  # darker: something to learn
    index = pd.DataFrame(
        {"row": np.arange(n), "label": labels, "split": np.repeat(["train", "val", "test"], n // 3)}
    )
    pipeline = create_pipeline().only_nodes_with_namespaces(["binary.cnn", "three_class.cnn"])
    catalog = run_pipeline(
        pipeline,
        {
            "patches": {"images": images},
            "classifier_patch_index": index,
            **_tiny_cnn_params(batch_size=16),
            "params:classification.tasks.three_class": THREE,
        },
    )
    model = catalog.load("binary.cnn.classifier")
    assert isinstance(model, keras.Model) and model.output_shape == (None, 2)
    summary = catalog.load("binary.cnn.training_summary")
    assert summary["train_patches"] == 16 and summary["epochs_run"] == 1
    # The configured test-time augmentation is in the saved model (none unless asked)
    assert summary["test_time_augmentation"] == "none" and tta.base_model(model) is model
    skipped = catalog.load("three_class.cnn.classifier")
    assert isinstance(skipped, Skipped) and "cannot express" in skipped.reason


def _one_namespace_inputs(training_extra):
    rng = np.random.default_rng(1)
    n = 24
    labels = np.tile(["normal", "ssc"], n // 2)
    return {
        "patches": {"images": rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8)},
        "classifier_patch_index": pd.DataFrame(
            {"row": np.arange(n), "label": labels, "split": np.repeat(["train", "val"], n // 2)}
        ),
        **_tiny_cnn_params(batch_size=8, **training_extra),
    }


def test_the_saved_classifier_holds_the_configured_test_time_augmentation():
    pipeline = create_pipeline().only_nodes_with_namespaces(["binary.cnn"])
    catalog = run_pipeline(pipeline, _one_namespace_inputs({"test_time_augmentation": "dihedral"}))
    model = catalog.load("binary.cnn.classifier")
    assert tta.base_model(model) is not model
    assert catalog.load("binary.cnn.training_summary")["test_time_augmentation"] == "dihedral"


def test_a_misspelt_test_time_augmentation_stops_before_training():
    pipeline = create_pipeline().only_nodes_with_namespaces(["binary.cnn"])
    with pytest.raises(Exception, match="test_time_augmentation must be one of"):
        run_pipeline(pipeline, _one_namespace_inputs({"test_time_augmentation": "8"}))
