"""The `segmentation` pipeline: patches + masks -> UNet -> dermis fraction -> selected patches."""

from kedro.pipeline import Pipeline, node

from .nodes import score_patches, select_patches, train_unet


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(train_unet, ["patches", "patch_index", "params:segmentation.unet"],
                 ["unet", "unet_training"], name="train_unet"),
            node(score_patches, ["unet", "patches", "patch_index", "params:segmentation.unet"],
                 ["scored_patch_index", "segmentation_metrics", "segmentation_summary"],
                 name="score_patches"),
            node(select_patches, ["scored_patch_index", "params:segmentation.selection"],
                 "classifier_patch_index", name="select_patches"),
        ]
    )
