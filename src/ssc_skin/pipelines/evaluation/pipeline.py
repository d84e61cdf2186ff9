"""The `evaluation` pipeline: every trained classifier scored on held-out patients; the report."""

from kedro.pipeline import Pipeline, node, pipeline

from ssc_skin.pipelines.classification.pipeline import (
    ARCHITECTURES,
    TASKS,
    namespace_parameters,
)

from .nodes import build_report, evaluate_predictions, log_model_run, predict_patches


def create_pipeline(**kwargs) -> Pipeline:
    template = Pipeline(
        [
            node(predict_patches,
                 ["classifier", "patches", "classifier_patch_index", "params:task",
                  "params:architecture"],
                 "predictions", name="predict_patches"),
            node(evaluate_predictions,
                 ["predictions", "params:task", "training_summary", "params:evaluation"],
                 ["metrics", "evaluation"], name="evaluate_predictions"),
            node(log_model_run, ["evaluation", "params:architecture"], None,
                 name="log_model_run"),
        ]
    )
    namespaces = [f"{task}.{arch}" for task in TASKS for arch in ARCHITECTURES]
    per_model = sum(
        (pipeline(template, namespace=f"{task}.{arch}",
                  inputs={"patches", "classifier_patch_index"},
                  parameters={**namespace_parameters(task, arch, with_training=False),
                              "params:evaluation": "params:evaluation"})
         for task in TASKS for arch in ARCHITECTURES),
        Pipeline([]),
    )
    report = Pipeline(
        [
            node(build_report,
                 ["segmentation_summary", "colour_baseline", "manifest",
                  *[f"{ns}.evaluation" for ns in namespaces]],
                 "report", name="build_report"),
        ]
    )
    return per_model + report
