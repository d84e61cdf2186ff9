"""The `segmentation` pipeline: patches + masks -> UNet -> dermis fraction -> selected patches."""

from kedro.pipeline import Pipeline, node

from .nodes import score_patches, segmentation_overlays, select_patches, train_unet


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(train_unet, ["patches", "patch_index", "params:segmentation.unet"],
                 ["unet", "unet_training"], name="train_unet"),
            node(score_patches, ["unet", "patches", "patch_index", "params:segmentation.unet"],
                 ["scored_patch_index", "segmentation_metrics", "segmentation_summary"],
                 name="score_patches"),
            node(segmentation_overlays,
                 ["unet", "cohort_images", "cohort_masks", "manifest", "patient_splits",
                  "stain_normalizer", "params:patches.patch_size", "params:segmentation.unet"],
                 "segmentation_overlays", name="segmentation_overlays"),
            node(select_patches, ["scored_patch_index", "params:segmentation.selection"],
                 "classifier_patch_index", name="select_patches"),
        ]
    )
