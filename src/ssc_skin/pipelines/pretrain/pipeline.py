"""The `pretrain` pipeline (not in the default run): `kedro run --pipeline pretrain` writes a
backbone pretrained on a synthetic cohort, without internet, to
data/06_models/pretrained_backbone.keras."""

from kedro.pipeline import Pipeline, node

from .nodes import pretrain_backbone, pretraining_patches


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                pretraining_patches,
                "params:pretrain",
                "pretraining_patches",
                name="pretraining_patches",
            ),
            node(
                pretrain_backbone,
                ["pretraining_patches", "params:pretrain", "params:classification.architectures"],
                ["pretrained_backbone", "pretraining_summary", "pretraining_metrics"],
                name="pretrain_backbone",
            ),
        ]
    )
