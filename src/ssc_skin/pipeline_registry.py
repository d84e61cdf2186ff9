"""Project pipelines."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from ssc_skin.pipelines import (
    classification,
    cohort,
    cv,
    evaluation,
    export,
    patches,
    predict,
    pretrain,
    registry,
    segmentation,
)


def register_pipelines() -> dict[str, Pipeline]:
    """The study's stages in order; `__default__` runs them all; `predict` screens new images."""
    pipelines = {
        "cohort": cohort.create_pipeline(),
        "patches": patches.create_pipeline(),
        "segmentation": segmentation.create_pipeline(),
        "classification": classification.create_pipeline(),
        "evaluation": evaluation.create_pipeline(),
        "export": export.create_pipeline(),
        "registry": registry.create_pipeline(),  # after export: registers its predictors
    }
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    pipelines["predict"] = predict.create_pipeline()  # new images; not part of the default run
    pipelines["cv"] = cv.create_pipeline()  # k-fold cross-validation; not in the default run
    pipelines["pretrain"] = pretrain.create_pipeline()  # offline backbone pretraining
    return pipelines
