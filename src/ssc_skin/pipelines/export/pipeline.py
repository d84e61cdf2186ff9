"""The `export` pipeline: every classifier to TFLite, checked against Keras, then served."""

from kedro.pipeline import Pipeline, node

from ssc_skin.model_grid import active
from ssc_skin.pipelines.classification.pipeline import for_each_model

from .composite_nodes import log_hybrid_predictor, log_texture_predictor
from .nodes import export_classifier, log_whole_image_predictor

_SERVING = [
    "params:evaluation",
    "preprocess_config",
    "unet_tflite",
    "params:predict.low_confidence_threshold",
    "params:export.log_predictor",
]


def composite_pipeline() -> Pipeline:
    """Per task, the colour + texture peer and the hybrid as whole-image predictors too, so
    the registry can choose its champion among every model."""
    grid, nodes = active(), []
    for task in grid.tasks:
        common = [f"params:classification.tasks.{task}", *_SERVING]
        nodes.append(
            node(
                log_texture_predictor,
                [f"{task}.texture.classifier", f"{task}.texture.training_summary", *common],
                f"{task}.texture.whole_image_predictor",
                name=f"{task}.texture.log_whole_image_predictor",
                namespace=f"{task}.texture",
            )
        )
        deep = [
            name
            for arch in grid.architectures
            for name in (
                f"{task}.{arch}.classifier",
                f"{task}.{arch}.tflite_float32",
                f"{task}.{arch}.export_summary",
                f"params:classification.architectures.{arch}",
            )
        ]
        nodes.append(
            node(
                log_hybrid_predictor,
                [
                    f"{task}.hybrid.classifier",
                    f"{task}.hybrid.training_summary",
                    *common,
                    f"{task}.texture.classifier",
                    *deep,
                ],
                f"{task}.hybrid.whole_image_predictor",
                name=f"{task}.hybrid.log_whole_image_predictor",
                namespace=f"{task}.hybrid",
            )
        )
    return Pipeline(nodes)


def create_pipeline(composites: bool = True, **kwargs) -> Pipeline:
    """Every deep classifier to TFLite and a whole-image predictor; with `composites`, the
    peer's and the hybrid's predictors as well (the study fits them; a bare classification
    run does not)."""
    template = Pipeline(
        [
            node(
                export_classifier,
                [
                    "classifier",
                    "patches",
                    "classifier_patch_index",
                    "params:task",
                    "params:architecture",
                    "params:export",
                ],
                ["tflite_float32", "tflite_int8", "export_summary", "export_metrics"],
                name="export_tflite",
            ),
            node(
                log_whole_image_predictor,
                [
                    "classifier",
                    "tflite_float32",
                    "export_summary",
                    "params:task",
                    "params:architecture",
                    "preprocess_config",
                    "unet_tflite",
                    "params:predict.low_confidence_threshold",
                    "params:export.log_predictor",
                    "training_summary",
                ],
                "whole_image_predictor",
                name="log_whole_image_predictor",
            ),
        ]
    )
    return for_each_model(
        template,
        {
            "params:export": "params:export",
            "params:export.log_predictor": "params:export.log_predictor",
            "params:predict.low_confidence_threshold": "params:predict.low_confidence_threshold",
        },
        shared_inputs={"preprocess_config", "unet_tflite"},
    ) + (composite_pipeline() if composites else Pipeline([]))
