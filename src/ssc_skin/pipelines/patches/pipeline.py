"""The `patches` pipeline: stain normaliser fitted on training images, then grid tiling."""

from kedro.pipeline import Pipeline, node

from .nodes import extract_patches, fit_stain_normalizer


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(fit_stain_normalizer,
                 ["cohort_images", "manifest", "patient_splits", "params:patches.stain"],
                 "stain_normalizer", name="fit_stain_normalizer"),
            node(extract_patches,
                 ["cohort_images", "cohort_masks", "manifest", "patient_splits",
                  "stain_normalizer", "params:patches"],
                 ["patches", "patch_index"], name="extract_patches"),
        ]
    )
