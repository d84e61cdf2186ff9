"""The `patches` pipeline: stain normaliser fitted on training images, the one preprocessing
configuration, then grid tiling."""

from kedro.pipeline import Pipeline, node

from .nodes import extract_patches, fit_stain_normalizer, preprocess_config


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                fit_stain_normalizer,
                ["cohort_images", "manifest", "patient_splits", "params:patches.stain"],
                "stain_normalizer",
                name="fit_stain_normalizer",
            ),
            node(
                preprocess_config,
                ["stain_normalizer", "params:patches", "params:segmentation"],
                "preprocess_config",
                name="preprocess_config",
            ),
            node(
                extract_patches,
                [
                    "cohort_images",
                    "cohort_masks",
                    "manifest",
                    "patient_splits",
                    "preprocess_config",
                    "linkage",
                    "params:engine",
                ],
                ["patches", "patch_index"],
                name="extract_patches",
            ),
        ]
    )
