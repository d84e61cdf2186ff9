"""Project pipelines."""

from __future__ import annotations

import warnings

from kedro.pipeline import Pipeline, pipeline

from ssc_skin.model_grid import active
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

# Kedro warns on every command that "dataset names contain '.'": here every such name is a
# namespace path (`fold_0.binary.cnn.classifier`), which is what the dots are for.
warnings.filterwarnings(
    "ignore", message="One or more dataset names contain '.'", category=UserWarning
)


def _registry_on_pooled_cv() -> Pipeline:
    """The registry, ranking each model by its pooled cross-validation evaluation (validation
    patients of every fold) instead of a single split's."""
    stage = registry.create_pipeline()
    return pipeline(
        stage,
        inputs={
            name: f"cv.{name}" if name.endswith(".evaluation") else name
            for name in stage.inputs()
            if not name.startswith("params:")
        },
    )


def register_pipelines() -> dict[str, Pipeline]:
    """`__default__` is the study: every patient tested once in k patient-grouped folds (per-
    image work shared, fitted state per fold), then the final fit on every patient, exported
    and registered. `single_split` is the train / val / test study of earlier releases."""
    single_split = {
        "cohort": cohort.create_pipeline(),
        "patches": patches.create_pipeline(),
        "segmentation": segmentation.create_pipeline(),
        "classification": classification.create_pipeline(),
        "evaluation": evaluation.create_pipeline(),
        "export": export.create_pipeline(),
        "registry": registry.create_pipeline(),  # after export: registers its predictors
    }
    folds = active().folds
    pipelines = {
        **single_split,
        "single_split": sum(single_split.values(), Pipeline([])),
        "__default__": cv.create_pipeline(folds, final=True)
        + export.create_pipeline()
        + _registry_on_pooled_cv(),
        "cv": cv.create_pipeline(folds),  # the folds and their report, no final fit
        "predict": predict.create_pipeline(),  # new images; not part of the default run
        "pretrain": pretrain.create_pipeline(),  # offline backbone pretraining
    }
    return pipelines
