"""The `patches` pipeline: stain normaliser fitted on training images, the one preprocessing
configuration, then grid tiling."""

from kedro.pipeline import Pipeline, node

from .fold_nodes import cut_shared_patches, fold_patches
from .nodes import extract_patches, fit_stain_normalizer, preprocess_config


def _fitted_preprocessing() -> list:
    """The stain normaliser fitted on this split's training images, and the one preprocessing
    configuration that carries it."""
    return [
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
    ]


def shared_cut_pipeline() -> Pipeline:
    """Once per run: every image's raw crops, masks, provenance and stain statistics."""
    return Pipeline(
        [
            node(
                cut_shared_patches,
                [
                    "cohort_images",
                    "cohort_masks",
                    "manifest",
                    "params:patches",
                    "params:segmentation",
                    "linkage",
                    "params:engine",
                ],
                ["shared_patches", "shared_patch_index", "stain_estimates"],
                name="cut_shared_patches",
            )
        ]
    )


def fold_pipeline() -> Pipeline:
    """Per fold (and for the final fit): the fitted normaliser applied to the shared crops."""
    return Pipeline(
        [
            *_fitted_preprocessing(),
            node(
                fold_patches,
                [
                    "shared_patches",
                    "shared_patch_index",
                    "stain_estimates",
                    "preprocess_config",
                    "patient_splits",
                ],
                ["patches", "patch_index"],
                name="fold_patches",
            ),
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    """The single-split study's patches stage: fit, then cut every image with the normaliser."""
    return Pipeline(
        [
            *_fitted_preprocessing(),
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
