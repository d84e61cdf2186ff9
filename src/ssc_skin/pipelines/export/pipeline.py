"""The `export` pipeline: every classifier to TFLite, checked against Keras, then served."""

from kedro.pipeline import Pipeline, node

from ssc_skin.pipelines.classification.pipeline import for_each_model

from .nodes import export_classifier, log_whole_image_predictor


def create_pipeline(**kwargs) -> Pipeline:
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
    )
