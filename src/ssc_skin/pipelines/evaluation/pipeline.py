"""The `evaluation` pipeline: every trained classifier scored on held-out patients; the report."""

from kedro.pipeline import Pipeline, node

from ssc_skin.pipelines.classification.pipeline import MODEL_NAMESPACES, for_each_model

from .nodes import (
    build_report,
    evaluate_predictions,
    evaluation_figures,
    gradcam_examples,
    log_model_run,
    predict_patches,
)


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
            node(log_model_run, ["evaluation", "params:architecture", "classifier"], None,
                 name="log_model_run"),
            node(gradcam_examples,
                 ["classifier", "predictions", "patches", "classifier_patch_index",
                  "cohort_images", "params:task", "params:architecture"],
                 "gradcam", name="gradcam_examples"),
        ]
    )
    per_model = for_each_model(template, {"params:evaluation": "params:evaluation"},
                               shared_inputs={"cohort_images"})
    report = Pipeline(
        [
            node(build_report,
                 ["segmentation_summary", "colour_baseline", "manifest", "stain_normalizer",
                  "params:evaluation",
                  *[f"{ns}.evaluation" for ns in MODEL_NAMESPACES]],
                 ["report", "report_html"], name="build_report"),
            node(evaluation_figures,
                 [*[f"{ns}.predictions" for ns in MODEL_NAMESPACES],
                  *[f"{ns}.training_summary" for ns in MODEL_NAMESPACES]],
                 ["confusion_matrices", "roc_curves", "training_curves"],
                 name="evaluation_figures"),
        ]
    )
    return per_model + report
