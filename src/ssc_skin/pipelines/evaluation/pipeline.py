"""The `evaluation` pipeline: every trained classifier, and the classical colour + texture peer,
scored on held-out patients by the same code; the paired comparison; figures; the report."""

from kedro.pipeline import Pipeline, node, pipeline

from ssc_skin.model_grid import ModelGrid, active
from ssc_skin.pipelines.classification.pipeline import for_each_model

from .nodes import (
    build_report,
    compare_models,
    evaluate_predictions,
    evaluation_figures,
    gradcam_examples,
    log_model_run,
    log_texture_run,
    predict_patches,
    predict_texture_baseline,
    render_report_html,
    texture_features,
    train_texture_baseline,
)

TEXTURE = "texture"  # the classical peer's namespace suffix: {task}.texture


def evaluated_namespaces(grid: ModelGrid | None = None) -> tuple[str, ...]:
    """Every model the report shows, task by task: the deep models, then the classical peer."""
    grid = grid or active()
    return tuple(
        ns
        for task in grid.tasks
        for ns in (*(f"{task}.{arch}" for arch in grid.architectures), f"{task}.{TEXTURE}")
    )


def deep_model_pipeline(gradcam: bool = True) -> Pipeline:
    """Per task x architecture: predict the selected patches, score them, log the nested run
    (and, unless `gradcam` is False, the Grad-CAM figure)."""
    nodes = [
        node(
            predict_patches,
            [
                "classifier",
                "patches",
                "classifier_patch_index",
                "params:task",
                "params:architecture",
            ],
            "predictions",
            name="predict_patches",
        ),
        node(
            evaluate_predictions,
            [
                "predictions",
                "params:task",
                "training_summary",
                "params:evaluation",
                "image_selection",
            ],
            ["metrics", "evaluation"],
            name="evaluate_predictions",
        ),
        node(
            log_model_run,
            ["evaluation", "params:architecture", "classifier"],
            None,
            name="log_model_run",
        ),
    ]
    if gradcam:
        nodes.append(
            node(
                gradcam_examples,
                [
                    "classifier",
                    "predictions",
                    "patches",
                    "classifier_patch_index",
                    "cohort_images",
                    "params:task",
                    "params:architecture",
                ],
                "gradcam",
                name="gradcam_examples",
            )
        )
    return for_each_model(
        Pipeline(nodes),
        {"params:evaluation": "params:evaluation"},
        shared_inputs={"cohort_images", "image_selection"} if gradcam else {"image_selection"},
    )


def texture_pipeline() -> Pipeline:
    """The colour + texture peer, per task (namespace `{task}.texture`): features once for all
    tasks, then fit, predict and score exactly like a deep model."""
    features = Pipeline(
        [
            node(
                texture_features,
                ["patches", "classifier_patch_index", "params:evaluation"],
                "texture_features",
                name="texture_features",
            )
        ]
    )
    template = Pipeline(
        [
            node(
                train_texture_baseline,
                [
                    "texture_features",
                    "classifier_patch_index",
                    "params:task",
                    "params:evaluation",
                    "params:training",
                ],
                ["classifier", "training_summary"],
                name="train_texture_baseline",
            ),
            node(
                predict_texture_baseline,
                ["classifier", "texture_features", "classifier_patch_index", "params:task"],
                "predictions",
                name="predict_texture_baseline",
            ),
            node(
                evaluate_predictions,
                [
                    "predictions",
                    "params:task",
                    "training_summary",
                    "params:evaluation",
                    "image_selection",
                ],
                ["metrics", "evaluation"],
                name="evaluate_predictions",
            ),
            node(log_texture_run, "evaluation", None, name="log_texture_run"),
        ]
    )
    per_task = sum(
        (
            pipeline(
                template,
                namespace=f"{task}.{TEXTURE}",
                inputs={"texture_features", "classifier_patch_index", "image_selection"},
                parameters={
                    "params:task": f"params:classification.tasks.{task}",
                    "params:evaluation": "params:evaluation",
                    "params:training": "params:classification.training",
                },
            )
            for task in active().tasks
        ),
        Pipeline([]),
    )
    return features + per_task


def per_model_pipeline(gradcam: bool = True) -> Pipeline:
    """Everything per model: the deep models and the classical peer (reused by `cv`)."""
    return deep_model_pipeline(gradcam) + texture_pipeline()


def comparison_pipeline(summary: str = "training_summary") -> Pipeline:
    """The paired comparison and the figures over every evaluated model (each model's
    `{ns}.predictions` and `{ns}.<summary>`; `cv` reuses it over its pooled results)."""
    namespaces = evaluated_namespaces()
    predictions = [f"{ns}.predictions" for ns in namespaces]
    summaries = [f"{ns}.{summary}" for ns in namespaces]
    return Pipeline(
        [
            node(
                compare_models,
                ["params:evaluation", *predictions, *summaries],
                ["model_comparison_metrics", "model_comparison"],
                name="compare_models",
            ),
            node(
                evaluation_figures,
                [*predictions, *summaries],
                ["confusion_matrices", "roc_curves", "training_curves", "reliability_diagrams"],
                name="evaluation_figures",
            ),
        ]
    )


def report_html_pipeline() -> Pipeline:
    """`report` (markdown) and its figures -> one self-contained `report_html`."""
    return Pipeline(
        [
            node(
                render_report_html,
                ["report", "report_figures"],
                "report_html",
                name="render_report_html",
            )
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    report = Pipeline(
        [
            node(
                build_report,
                [
                    "segmentation_summary",
                    "colour_baseline",
                    "manifest",
                    "stain_normalizer",
                    "params:evaluation",
                    "ablations_table",
                    "model_comparison",
                    *[f"{ns}.evaluation" for ns in evaluated_namespaces()],
                ],
                "report",
                name="build_report",
            ),
        ]
    )
    return per_model_pipeline() + comparison_pipeline() + report + report_html_pipeline()
