"""An in-memory catalog for the evaluation pipeline: tiny Keras classifiers, 16 px patches."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from PIL import Image

from ssc_skin.constants import Skipped
from ssc_skin.models import builders
from ssc_skin.pipelines.evaluation.pipeline import evaluated_namespaces

TASKS = {
    "binary": {
        "name": "binary",
        "classes": ["normal", "ssc"],
        "label_map": {"normal": "normal", "early": "ssc", "late": "ssc", "ssc": "ssc"},
    },
    "three_class": {
        "name": "three_class",
        "classes": ["normal", "early", "late"],
        "label_map": {"normal": "normal", "early": "early", "late": "late"},
    },
}
ARCHITECTURES = {
    "mobilenetv2": {"name": "mobilenetv2", "input_size": 16},
    "cnn": {"name": "cnn", "input_size": 16},
}
EVALUATION = {
    "bootstrap_resamples": 20,
    "confidence": 0.95,
    "seed": 0,
    "bootstrap_metrics": ["accuracy", "auc"],
    "calibration_bins": 10,
    "texture": {"C": [1.0], "gabor_wavelengths": [4]},
}
LABELS = ("normal", "early", "late")
NOT_ASSESSABLE = "im-test-late-0-1"


def tiny_cohort(
    patients_per_label: dict[str, int] | None = None, seed: int = 0
) -> tuple[dict, pd.DataFrame, pd.DataFrame, dict, pd.DataFrame]:
    """(patches, patch_index, manifest, images, splits): 2 images of 32 px per patient, each
    cut into four 16 px patches whose colour follows the label (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    per_label = patients_per_label or {"train": 3, "val": 2, "test": 2}
    tint = {"normal": (230, 150, 190), "early": (200, 110, 170), "late": (170, 80, 150)}
    patches, rows, manifest, images, splits = [], [], [], {}, []
    for split, n in per_label.items():
        for label in LABELS:
            for k in range(n):
                patient = f"pt-{split}-{label}-{k}"
                splits.append({"patient": patient, "label": label, "split": split})
                for i in range(2):
                    image_id = f"im-{split}-{label}-{k}-{i}"
                    pixels = np.clip(
                        np.array(tint[label]) + rng.normal(0, 12, (32, 32, 3)), 0, 255
                    ).astype(np.uint8)
                    images[image_id] = lambda a=pixels: Image.fromarray(a)
                    manifest.append({"image": image_id, "patient": patient, "label": label})
                    for y in (0, 16):
                        for x in (0, 16):
                            patches.append(pixels[y : y + 16, x : x + 16])
                            rows.append(
                                {
                                    "row": len(rows),
                                    "image": image_id,
                                    "patient": patient,
                                    "label": label,
                                    "split": split,
                                    "x": x,
                                    "y": y,
                                    "tissue_fraction": 1.0,
                                }
                            )
    return (
        {"images": np.stack(patches)},
        pd.DataFrame(rows),
        pd.DataFrame(manifest),
        images,
        pd.DataFrame(splits),
    )


def image_selection(
    patch_index: pd.DataFrame, manifest: pd.DataFrame, splits: pd.DataFrame
) -> pd.DataFrame:
    counts = patch_index.groupby("image").size()
    frame = manifest.merge(splits[["patient", "split"]], on="patient")
    frame["n_tiles"] = frame["image"].map(counts).fillna(0).astype(int)
    frame["n_classified"] = frame["n_tiles"]
    frame["selection"], frame["reason"] = "ok", ""
    lost = frame["image"] == NOT_ASSESSABLE
    frame.loc[lost, ["selection", "reason", "n_classified"]] = [
        "not_assessable",
        "no tissue tile in the image",
        0,
    ]
    return frame


def _classifier(n_classes: int, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return builders.build_classifier(
        "cnn", 16, n_classes, {"filters": [4], "dense_units": 4, "dropout": 0.0}
    )


class KeptDataset(MemoryDataset):
    """A MemoryDataset the runner does not empty after its last use, for the test to read."""

    def _release(self) -> None:
        pass


def kept(names: list[str]) -> dict[str, KeptDataset]:
    return {name: KeptDataset(copy_mode="assign") for name in names}


@pytest.fixture(scope="module")
def evaluation_catalog() -> DataCatalog:
    patches, index, manifest, images, splits = tiny_cohort()
    selection = image_selection(index, manifest, splits)
    classified = index[index["image"] != NOT_ASSESSABLE].reset_index(drop=True)
    data = {
        "patches": patches,
        "classifier_patch_index": classified,
        "image_selection": selection,
        "cohort_images": images,
        "manifest": manifest,
        "segmentation_summary": {"test_dermis_dice": 0.9},
        "colour_baseline": {},
        "stain_normalizer": {"method": "none"},
        "ablations_table": "",
        "report_figures": {},
        "params:evaluation": EVALUATION,
        "params:classification.training": {"seed": 1, "max_train_patches": None},
    }
    for name, task in TASKS.items():
        data[f"params:classification.tasks.{name}"] = task
        for arch, architecture in ARCHITECTURES.items():
            data[f"params:classification.architectures.{arch}"] = architecture
            data[f"{name}.{arch}.classifier"] = _classifier(len(task["classes"]), 3)
            data[f"{name}.{arch}.training_summary"] = {
                "task": name,
                "architecture": arch,
                "classes": task["classes"],
                "train_seconds": 1.0,
                "weights_source": "random",
                "train_patches": 10,
                "epochs_run": 1,
                "patches_per_second": 10.0,
                "parameters": 100,
                "history": {"loss": [1.0], "val_loss": [1.1]},
            }
        # the architecture declared but not enabled in this run (densenet by default)
        data["params:classification.architectures.densenet"] = {
            "name": "densenet",
            "enabled": False,
        }
        reason = "densenet is not enabled in this run"
        data[f"{name}.densenet.classifier"] = Skipped(reason)
        data[f"{name}.densenet.training_summary"] = {
            "task": name,
            "architecture": "densenet",
            "classes": task["classes"],
            "skipped": reason,
        }
    outputs = [
        f"{ns}.{what}"
        for ns in evaluated_namespaces()
        for what in ("evaluation", "metrics", "predictions")
    ]
    return DataCatalog(
        {
            **{k: MemoryDataset(v, copy_mode="assign") for k, v in data.items()},
            **kept([*outputs, "model_comparison", "report", "report_html"]),
        }
    )
