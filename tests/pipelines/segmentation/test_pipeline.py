"""The `segmentation` pipeline: UNet, its TFLite export, dermis scores and the per-image
choice of the patches the classifiers see (the rule `predict` and serving apply too)."""

import dataclasses

import pandas as pd
import pytest

from ssc_skin.pipelines.patches.nodes import extract_patches
from ssc_skin.pipelines.segmentation.nodes import select_patches
from ssc_skin.pipelines.segmentation.pipeline import create_pipeline
from ssc_skin.preprocessing.preprocess import PreprocessConfig
from tests.pipelines.patches.test_pipeline import _config, tiny_cohort
from tests.pipelines.runner import run_pipeline

GATED = PreprocessConfig(min_tissue_fraction=0.5, min_dermis_fraction=0.65).to_dict()


def _cohort():
    """Six images (train/val/test x normal/late), each with its candidate patches."""
    manifest = pd.DataFrame(
        {
            "image": [f"im{i}" for i in range(6)],
            "patient": [f"pt{i}" for i in range(6)],
            "label": ["normal", "late"] * 3,
        }
    )
    splits = pd.DataFrame(
        {"patient": manifest["patient"], "split": ["train", "train", "val", "val", "test", "test"]}
    )
    rows = []
    for i in range(6):
        for tissue, dermis in ((0.9, 0.9), (0.8, 0.7), (0.2, 0.9)):
            rows.append(
                {
                    "row": len(rows),
                    "image": f"im{i}",
                    "patient": f"pt{i}",
                    "label": manifest["label"][i],
                    "split": splits["split"][i],
                    "tissue_fraction": tissue,
                    "dermis_fraction": dermis,
                }
            )
    return pd.DataFrame(rows), manifest, splits


def test_gating_keeps_patches_with_enough_tissue_and_dermis():
    scored, manifest, splits = _cohort()
    selected, images = select_patches(scored, manifest, splits, GATED)
    assert (selected["tissue_fraction"] >= 0.5).all()
    assert (selected["dermis_fraction"] >= 0.65).all() and len(selected) == 12
    assert set(images["selection"]) == {"ok"} and (images["n_classified"] == 2).all()


def test_gating_off_keeps_every_classifiable_patch():
    scored, manifest, splits = _cohort()
    config = {**GATED, "use_segmentation": False, "min_dermis_fraction": 0.99}
    selected, _ = select_patches(scored, manifest, splits, config)
    assert len(selected) == 12 and (selected["tissue_fraction"] >= 0.5).all()


def test_an_image_no_patch_of_which_passes_is_assessed_from_fallbacks_never_dropped():
    scored, manifest, splits = _cohort()
    test_image = scored["image"] == "im5"
    scored.loc[test_image, "dermis_fraction"] = 0.1  # gating would remove all of im5
    scored.loc[scored["image"] == "im4", "tissue_fraction"] = [0.3, 0.1, 0.2]  # none >= 0.5
    selected, images = select_patches(scored, manifest, splits, GATED)
    by_image = images.set_index("image")
    assert by_image.loc["im5", "selection"] == "gating_fallback"
    assert by_image.loc["im5", "n_classified"] == 2  # its classifiable patches, ungated
    assert by_image.loc["im4", "selection"] == "tissue_fallback"
    assert set(selected.loc[selected["image"] == "im4", "tissue_fraction"]) == {0.3, 0.2, 0.1}
    assert set(selected.loc[selected["image"] == "im5", "selection"]) == {"gating_fallback"}
    assert by_image.loc["im4", "reason"] and by_image.loc["im5", "reason"]


def test_fallback_images_of_the_training_split_are_evaluated_never_learnt():
    scored, manifest, splits = _cohort()
    twin = scored[scored["image"] == "im0"].assign(image="im6", patient="pt6")
    scored = pd.concat([scored, twin], ignore_index=True)
    manifest = pd.concat(
        [manifest, pd.DataFrame([{"image": "im6", "patient": "pt6", "label": "normal"}])],
        ignore_index=True,
    )
    splits = pd.concat([splits, pd.DataFrame([{"patient": "pt6", "split": "train"}])])
    scored.loc[scored["image"] == "im0", "dermis_fraction"] = 0.0
    selected, images = select_patches(scored, manifest, splits, GATED)
    assert "im0" not in set(selected["image"])
    row = images.set_index("image").loc["im0"]
    assert row["selection"] == "gating_fallback" and row["n_classified"] == 0
    assert "left out of training" in row["reason"]


def test_an_image_without_any_tile_is_listed_as_not_assessable():
    scored, manifest, splits = _cohort()
    scored = scored[scored["image"] != "im5"]  # a test image: reported, not fatal
    selected, images = select_patches(scored, manifest, splits, GATED)
    row = images.set_index("image").loc["im5"]
    assert row["selection"] == "not_assessable" and row["n_tiles"] == 0 and row["reason"]
    assert len(images) == len(manifest)


def test_a_split_left_without_any_patch_of_a_class_explains_what_to_change():
    scored, manifest, splits = _cohort()
    scored = scored[~scored["image"].isin(["im1"])]
    with pytest.raises(ValueError, match="min_dermis_fraction"):
        select_patches(scored, manifest, splits, GATED)


@pytest.fixture(scope="module")
def segmented():
    images, masks, manifest, splits = tiny_cohort(masks=True)
    manifest = manifest.assign(label=["normal", "late", "normal"])  # one class per split
    config = _config()
    arrays, index = extract_patches(images, masks, manifest, splits, config)
    unet = {
        "input_size": 16,
        "base_filters": 4,
        "depth": 2,
        "epochs": 1,
        "batch_size": 16,
        "learning_rate": 0.002,
        "patience": 1,
        "seed": 0,
        "max_train_patches": 64,
    }
    return run_pipeline(
        create_pipeline(),
        {
            "patches": arrays,
            "patch_index": index,
            "cohort_images": images,
            "cohort_masks": masks,
            "manifest": manifest,
            "patient_splits": splits,
            "preprocess_config": dataclasses.replace(config, min_dermis_fraction=0.0),
            "params:segmentation.unet": unet,
        },
    ), manifest


def test_the_segmentation_pipeline_runs_on_an_in_memory_catalog(segmented):
    catalog, manifest = segmented
    summary = catalog.load("segmentation_summary")
    assert summary["runtime"] == "tflite_int8" and summary["input_size"] == 16
    assert 0 <= summary["test_dermis_dice"] <= 1 and "test_dermis_dice_keras" in summary
    assert catalog.load("unet_tflite")[4:8] == b"TFL3"
    scored = catalog.load("scored_patch_index")
    assert scored["dermis_fraction"].between(0, 1).all()
    images = catalog.load("image_selection")
    assert list(images["image"]) == list(manifest["image"])
    assert set(catalog.load("classifier_patch_index")["image"]) <= set(manifest["image"])
