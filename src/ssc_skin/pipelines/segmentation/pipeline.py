"""The `segmentation` pipeline: patches + masks -> UNet (exported to TFLite) -> dermis
fraction -> the patches each image's classification uses."""

from kedro.pipeline import Pipeline, node

from .nodes import (
    export_unet,
    score_patches,
    segmentation_overlays,
    select_patches,
    train_unet,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                train_unet,
                ["patches", "patch_index", "params:segmentation.unet"],
                ["unet", "unet_training"],
                name="train_unet",
            ),
            node(
                export_unet,
                ["unet", "patches", "patch_index", "params:segmentation.unet"],
                "unet_tflite",
                name="export_unet",
            ),
            node(
                score_patches,
                [
                    "unet",
                    "unet_tflite",
                    "patches",
                    "patch_index",
                    "preprocess_config",
                    "params:segmentation.unet",
                ],
                ["scored_patch_index", "segmentation_metrics", "segmentation_summary"],
                name="score_patches",
            ),
            node(
                segmentation_overlays,
                [
                    "unet_tflite",
                    "cohort_images",
                    "cohort_masks",
                    "manifest",
                    "patient_splits",
                    "preprocess_config",
                    "params:segmentation.unet",
                ],
                "segmentation_overlays",
                name="segmentation_overlays",
            ),
            node(
                select_patches,
                ["scored_patch_index", "manifest", "patient_splits", "preprocess_config"],
                ["classifier_patch_index", "image_selection"],
                name="select_patches",
            ),
        ]
    )
