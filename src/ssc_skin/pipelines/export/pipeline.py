"""The `export` pipeline: each MobileNetV2 to TFLite, checked against Keras, then served."""

from kedro.pipeline import Pipeline, node, pipeline

from ssc_skin.pipelines.classification.pipeline import TASKS

from .nodes import export_classifier, log_whole_image_predictor

EXPORTED_ARCHITECTURES = ("mobilenetv2",)  # the paper's deployable model; the CNN is a baseline
EXPORT_NAMESPACES = tuple(f"{t}.{a}" for t in TASKS for a in EXPORTED_ARCHITECTURES)


def create_pipeline(**kwargs) -> Pipeline:
    template = Pipeline(
        [
            node(export_classifier,
                 ["classifier", "patches", "classifier_patch_index", "params:task",
                  "params:architecture", "params:export"],
                 ["tflite_float32", "tflite_int8", "export_summary", "export_metrics"],
                 name="export_tflite"),
            node(log_whole_image_predictor,
                 ["classifier", "tflite_float32", "export_summary", "params:task",
                  "params:architecture", "params:patches",
                  "params:predict.low_confidence_threshold", "params:export.log_predictor"],
                 None, name="log_whole_image_predictor"),
        ]
    )
    return sum(
        (pipeline(template, namespace=f"{task}.{arch}",
                  inputs={"patches", "classifier_patch_index"},
                  parameters={"params:task": f"params:classification.tasks.{task}",
                              "params:architecture": f"params:classification.architectures.{arch}",
                              "params:export": "params:export",
                              "params:export.log_predictor": "params:export.log_predictor",
                              "params:patches": "params:patches",
                              "params:predict.low_confidence_threshold":
                                  "params:predict.low_confidence_threshold"})
         for task in TASKS for arch in EXPORTED_ARCHITECTURES),
        Pipeline([]),
    )
