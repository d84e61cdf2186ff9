"""The `patches` pipeline: the stain normaliser fitted on training patients, the one
preprocessing configuration, and tissue patches with their masks and provenance."""

import numpy as np
import pandas as pd
from PIL import Image

from ssc_skin.cohort import synthetic
from ssc_skin.pipelines.patches.nodes import (
    extract_patches,
    fit_stain_normalizer,
    preprocess_config,
)
from ssc_skin.pipelines.patches.pipeline import create_pipeline
from ssc_skin.preprocessing.preprocess import PreprocessConfig, Preprocessor
from tests.pipelines.runner import run_pipeline

PATCH_PARAMS = {
    "patch_size": 32,
    "stride": 32,
    "min_tissue_fraction": 0.5,
    "min_saturation": 12,
    "unet_min_tissue_fraction": 0.05,
    "stain": {"method": "macenko", "max_fit_images": 4},
}
SEGMENTATION = {
    "unet": {"input_size": 16},
    "selection": {"use_segmentation": True, "min_dermis_fraction": 0.4},
}


def tiny_cohort(masks: bool):
    images, mask_store, rows = {}, {}, []
    for p, label in enumerate(("normal", "late", "early")):
        patient = synthetic.make_patient(f"P{p}", label, np.random.default_rng(p))
        section = synthetic.render_section(patient, 0, (128, 128), artefact_rate=0.0)
        images[f"im{p}"] = lambda a=section.image: Image.fromarray(a)
        mask_store[f"im{p}"] = lambda m=section.mask: Image.fromarray(m)
        rows.append(
            {
                "image": f"im{p}",
                "patient": f"pt{p}",
                "label": label,
                "has_mask": masks,
                "mask_source": "cohort" if masks else "none",
            }
        )
    splits = pd.DataFrame({"patient": ["pt0", "pt1", "pt2"], "split": ["train", "val", "test"]})
    return images, (mask_store if masks else {}), pd.DataFrame(rows), splits


def _config(normalizer=None) -> PreprocessConfig:
    return preprocess_config(normalizer or {"method": "none"}, PATCH_PARAMS, SEGMENTATION)


def test_preprocess_config_gathers_patching_stain_and_gating_settings():
    config = PreprocessConfig.from_dict(_config({"method": "none"}))
    assert (config.patch_size, config.stride, config.unet_input_size) == (32, 32, 16)
    assert config.min_dermis_fraction == 0.4 and config.fallback_min_tissue_fraction == 0.05


def test_patches_carry_their_mask_and_its_source():
    arrays, index = extract_patches(*tiny_cohort(masks=True), _config())
    assert set(index["mask_source"]) == {"cohort"} and index["has_mask"].all()
    assert (arrays["masks"] == 2).any()
    _, without = extract_patches(*tiny_cohort(masks=False), _config())
    assert set(without["mask_source"]) == {"none"} and not without["has_mask"].any()


def test_training_patches_are_the_pixels_the_preprocessor_cuts_for_prediction():
    images, masks, manifest, splits = tiny_cohort(masks=True)
    normalizer = fit_stain_normalizer(images, manifest, splits, PATCH_PARAMS["stain"])
    arrays, index = extract_patches(images, masks, manifest, splits, _config(normalizer))
    found = Preprocessor(PreprocessConfig.from_dict(_config(normalizer)))(
        np.asarray(images["im1"]().convert("RGB"))
    )
    of_image = index[index["image"] == "im1"]
    by_position = {(x, y): row for x, y, row in of_image[["x", "y", "row"]].to_numpy()}
    assert len(found.tiles) and {(t.x, t.y) for t in found.tiles} <= set(by_position)
    for tile, patch in zip(found.tiles, found.patches, strict=True):
        np.testing.assert_array_equal(arrays["images"][by_position[(tile.x, tile.y)]], patch)


def test_low_tissue_patches_are_cut_for_the_unet_and_marked_unclassifiable():
    _, index = extract_patches(*tiny_cohort(masks=True), _config())
    assert (~index["classifiable"]).any()
    assert (index.loc[~index["classifiable"], "tissue_fraction"] < 0.5).all()
    assert (index["tissue_fraction"] >= 0.05).all()


def test_stain_normaliser_is_fitted_on_training_patients_only():
    images, _, manifest, splits = tiny_cohort(masks=False)
    params = {"method": "reinhard", "max_fit_images": 10}
    fitted = fit_stain_normalizer(images, manifest, splits, params)
    only_train = fit_stain_normalizer(images, manifest.head(1), splits, params)
    assert fitted == only_train


def test_the_patches_pipeline_runs_on_an_in_memory_catalog():
    images, masks, manifest, splits = tiny_cohort(masks=True)
    catalog = run_pipeline(
        create_pipeline(),
        {
            "cohort_images": images,
            "cohort_masks": masks,
            "manifest": manifest,
            "patient_splits": splits,
            "params:patches.stain": PATCH_PARAMS["stain"],
            "params:patches": PATCH_PARAMS,
            "params:segmentation": SEGMENTATION,
            "linkage": None,
            "params:engine": {"kind": "sequential"},
        },
    )
    config = catalog.load("preprocess_config")
    assert isinstance(config, PreprocessConfig)  # typed, not a dict to rebuild
    assert config.normalizer["method"] == "macenko" and config.patch_size == 32
    index, arrays = catalog.load("patch_index"), catalog.load("patches")
    assert len(index) == len(arrays["images"]) == len(arrays["masks"]) > 0
    assert set(index["image"]) == {"im0", "im1", "im2"}


def test_cutting_on_a_two_worker_dask_cluster_equals_cutting_here():
    """The per-image fan-out of the patches stage (engine.kind: dask) changes nothing."""
    images, masks, manifest, splits = tiny_cohort(masks=True)
    here, index_here = extract_patches(
        images, masks, manifest, splits, _config(), None, {"kind": "sequential"}
    )
    there, index_there = extract_patches(
        images,
        masks,
        manifest,
        splits,
        _config(),
        None,
        {"kind": "dask", "n_workers": 2, "threads_per_worker": 1},
    )
    pd.testing.assert_frame_equal(index_here, index_there)
    np.testing.assert_array_equal(here["images"], there["images"])
    np.testing.assert_array_equal(here["masks"], there["masks"])
