"""Unit tests of models/classifier.py: the steps of training one classifier, on tiny inputs."""

import numpy as np
import pandas as pd

from ssc_skin.models import classifier, training

TASK = {
    "name": "binary",
    "classes": ["normal", "ssc"],
    "label_map": {"normal": "normal", "ssc": "ssc"},
}
ARCH = {"name": "cnn", "input_size": 8, "options": {"filters": [2], "dense_units": 4}}


def test_a_disabled_model_or_an_inexpressible_task_says_why_and_an_enabled_one_runs():
    labels = pd.Series(["normal", "ssc"])
    assert classifier.skip_reason(labels, TASK, ARCH) == ""
    assert "enabled: false" in classifier.skip_reason(labels, TASK, {**ARCH, "enabled": False})
    three = {"name": "three_class", "classes": ["normal", "early", "late"], "label_map": {}}
    assert classifier.skip_reason(labels, three, ARCH)  # normal/ssc labels cannot say early/late


def test_a_variant_builds_its_builders_network_under_its_own_name():
    assert classifier.builder_name(ARCH) == "cnn"
    assert classifier.builder_name({**ARCH, "name": "cnn_wide", "builder": "cnn"}) == "cnn"


def test_the_architectures_own_settings_win():
    settings = classifier.settings_for(
        {"epochs": 8, "seed": 1}, {**ARCH, "training": {"epochs": 3}}
    )
    assert settings == {"epochs": 3, "seed": 1}


def test_the_summary_joins_the_curves_of_a_frozen_and_a_fine_tuning_fit():
    results = [
        training.TrainingResult({"loss": [3.0, 2.0]}, 1.0, 100.0, 2),
        training.TrainingResult({"loss": [1.0]}, 2.0, 300.0, 1),
    ]

    class Model:
        def count_params(self):
            return 7

    summary = classifier.training_summary(Model(), results, TASK, ARCH, {}, (10, 4))
    assert summary["history"] == {"loss": [3.0, 2.0, 1.0]}
    assert summary["epochs_run"] == 3 and summary["train_seconds"] == 3.0
    assert summary["patches_per_second"] == 200.0 and summary["parameters"] == 7
    assert (summary["train_patches"], summary["val_patches"]) == (10, 4)


def test_train_val_arrays_are_capped_resized_and_encoded():
    index = pd.DataFrame(
        {"row": range(6), "split": ["train"] * 4 + ["val"] * 2, "label": ["normal", "ssc"] * 3}
    )
    patches = {"images": np.zeros((6, 16, 16, 3), np.uint8)}
    (x, y), (xv, yv) = classifier.train_val_arrays(
        patches, index, TASK, 8, {"seed": 0, "max_train_patches": 2, "max_val_patches": None}
    )
    assert x.shape == (2, 8, 8, 3) and sorted(y.tolist()) == [0, 1]
    assert xv.shape == (2, 8, 8, 3) and yv.tolist() == [0, 1]
