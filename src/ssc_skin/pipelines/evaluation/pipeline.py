"""The `evaluation` pipeline: every trained classifier, and the classical colour + texture peer,
scored on held-out patients by the same code; the paired comparison; figures; the report."""

from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from ssc_skin.model_grid import ModelGrid, active
from ssc_skin.pipelines.classification.pipeline import for_each_model

from .hybrid_nodes import fit_hybrid, log_hybrid_run
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
HYBRID = "hybrid"  # the deep models and the peer stacked: {task}.hybrid


def evaluated_namespaces(grid: ModelGrid | None = None) -> tuple[str, ...]:
    """Every model the report shows, task by task: the deep models, the classical peer, and
    the hybrid of them all."""
    grid = grid or active()
    return tuple(
        ns
        for task in grid.tasks
        for ns in (
            *(f"{task}.{arch}" for arch in grid.architectures),
            f"{task}.{TEXTURE}",
            f"{task}.{HYBRID}",
        )
    )


def _predict_node() -> Any:
    return node(
        predict_patches,
        ["classifier", "patches", "classifier_patch_index", "params:task", "params:architecture"],
        "predictions",
        name="predict_patches",
    )


def _evaluate_node() -> Any:
    return node(
        evaluate_predictions,
        ["predictions", "params:task", "training_summary", "params:evaluation", "image_selection"],
        ["metrics", "evaluation"],
        name="evaluate_predictions",
    )


def deep_model_pipeline(gradcam: bool = True, evaluate: bool = True) -> Pipeline:
    """Per task x architecture: predict the selected patches, score them, log the nested run
    (and, unless `gradcam` is False, the Grad-CAM figure). `evaluate=False` (the final fit,
    which has no test patients) only predicts: the hybrid stacks on those predictions."""
    if not evaluate:
        return for_each_model(Pipeline([_predict_node()]), {})
    nodes = [
        _predict_node(),
        _evaluate_node(),
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


def texture_pipeline(evaluate: bool = True) -> Pipeline:
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
    nodes = [
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
    ]
    if evaluate:
        nodes += [
            _evaluate_node(),
            node(log_texture_run, "evaluation", None, name="log_texture_run"),
        ]
    per_task = sum(
        (
            pipeline(
                Pipeline(nodes),
                namespace=f"{task}.{TEXTURE}",
                inputs={"texture_features", "classifier_patch_index", "image_selection"}
                & Pipeline(nodes).inputs(),
                parameters={
                    p: q
                    for p, q in {
                        "params:task": f"params:classification.tasks.{task}",
                        "params:evaluation": "params:evaluation",
                        "params:training": "params:classification.training",
                    }.items()
                    if p in Pipeline(nodes).inputs()
                },
            )
            for task in active().tasks
        ),
        Pipeline([]),
    )
    return features + per_task


def hybrid_pipeline(evaluate: bool = True) -> Pipeline:
    """Per task (namespace `{task}.hybrid`): the task's deep models and peer stacked on their
    validation predictions, then scored like every other model."""
    grid = active()
    pipes = []
    for task in grid.tasks:
        components = [f"{task}.{arch}" for arch in grid.architectures] + [f"{task}.{TEXTURE}"]
        nodes = [
            node(
                fit_hybrid,
                [
                    "params:task",
                    "params:evaluation",
                    *[f"{c}.predictions" for c in components],
                    *[f"{c}.training_summary" for c in components],
                ],
                ["classifier", "training_summary", "predictions"],
                name="fit_hybrid",
            )
        ]
        if evaluate:
            nodes += [
                _evaluate_node(),
                node(log_hybrid_run, "evaluation", None, name="log_hybrid_run"),
            ]
        stage = Pipeline(nodes)
        pipes.append(
            pipeline(
                stage,
                namespace=f"{task}.{HYBRID}",
                inputs={i for i in stage.inputs() if not i.startswith("params:")},
                parameters={
                    p: q
                    for p, q in {
                        "params:task": f"params:classification.tasks.{task}",
                        "params:evaluation": "params:evaluation",
                    }.items()
                },
            )
        )
    return sum(pipes, Pipeline([]))


def per_model_pipeline(gradcam: bool = True) -> Pipeline:
    """Everything per model: the deep models, the classical peer and the hybrid (reused by
    `cv`)."""
    return deep_model_pipeline(gradcam) + texture_pipeline() + hybrid_pipeline()


def fitting_pipeline() -> Pipeline:
    """The final fit's models without scores (it has no test patients): deep predictions, the
    peer and the hybrid, all fitted and predicting, for export and serving."""
    return (
        deep_model_pipeline(gradcam=False, evaluate=False)
        + texture_pipeline(evaluate=False)
        + hybrid_pipeline(evaluate=False)
    )


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
