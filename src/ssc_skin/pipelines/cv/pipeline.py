"""The `cv` pipeline: the study in k patient-grouped folds, every patient tested exactly once.

`kedro run --env cv --pipeline cv` (synthetic cohort, CPU-sized) or `kedro run --pipeline cv`
(your configuration). The cohort is read once; each fold `fold_k` (a Kedro namespace) runs the
existing `patches`, `segmentation`, `classification` and per-model `evaluation` pipelines
unchanged on its own patient split, so its stain normaliser, UNet and classifiers never see its
test patients. The out-of-fold predictions of each model are pooled and scored by the study's
evaluation code: the report's headline covers every patient of the cohort, with the per-fold
spread beside it. k = the parameter `cv.folds` (default 5; `model_grid` reads it from the run's
configuration when the pipelines are built).
"""

from __future__ import annotations

from functools import partial

from kedro.pipeline import Pipeline, node, pipeline

from ssc_skin.model_grid import active
from ssc_skin.pipelines import classification, cohort, patches, segmentation
from ssc_skin.pipelines.evaluation import pipeline as evaluation
from ssc_skin.pipelines.evaluation.nodes import (
    compare_models,
    evaluation_figures,
    render_report_html,
)

from .nodes import assign_folds, build_cv_report, pool_model, pool_selection, tag_fold_runs

SHARED = {"cohort_images", "cohort_masks", "manifest", "linkage"}  # read once, used by every fold


def _cohort() -> Pipeline:
    """The cohort stage without its single-split table (whose saved copy later default runs
    reuse): cross-validation makes its own folds."""
    stage = cohort.create_pipeline()
    return stage.only_nodes(*[n.name for n in stage.nodes if "patient_splits" not in n.outputs])


def _segmentation() -> Pipeline:
    """Segmentation without its overlay figure (one per fold would say nothing new)."""
    stage = segmentation.create_pipeline()
    return stage.only_nodes(
        *[n.name for n in stage.nodes if "segmentation_overlays" not in n.outputs]
    )


def fold_stages(fold: str) -> Pipeline:
    """What one fold runs: the existing stages, their node functions untouched, and the fold
    tag on each model's MLflow run."""
    tag = node(
        partial(tag_fold_runs, fold=fold),
        [f"{ns}.evaluation" for ns in evaluation.evaluated_namespaces()],
        None,
        name="tag_fold_runs",
    )
    return (
        patches.create_pipeline()
        + _segmentation()
        + classification.create_pipeline()
        + evaluation.per_model_pipeline(gradcam=False)
        + Pipeline([tag])
    )


def _fold(k: int) -> Pipeline:
    namespace = f"fold_{k}"
    stages = fold_stages(namespace)
    parameters = {p: p for p in stages.inputs() if p.startswith("params:")}
    return pipeline(
        stages, namespace=namespace, inputs=SHARED & stages.inputs(), parameters=parameters
    )


def _pooled(folds: int) -> Pipeline:
    """Per model, the pooled out-of-fold evaluation; then comparison, figures and report."""
    namespaces = evaluation.evaluated_namespaces()
    nodes = [
        node(
            pool_selection,
            [f"fold_{k}.image_selection" for k in range(folds)],
            "cv.image_selection",
            name="cv.pool_selection",
        )
    ]
    for ns in namespaces:
        task = ns.split(".")[0]
        nodes.append(
            node(
                pool_model,
                [
                    f"params:classification.tasks.{task}",
                    "params:evaluation",
                    "cv.image_selection",
                    *[f"fold_{k}.{ns}.predictions" for k in range(folds)],
                    *[f"fold_{k}.{ns}.training_summary" for k in range(folds)],
                ],
                [f"cv.{ns}.metrics", f"cv.{ns}.evaluation", f"cv.{ns}.predictions"],
                name=f"cv.{ns}.pool_model",
            )
        )
    predictions = [f"cv.{ns}.predictions" for ns in namespaces]
    summaries = [f"cv.{ns}.evaluation" for ns in namespaces]
    nodes += [
        node(
            compare_models,
            ["params:evaluation", *predictions, *summaries],
            ["cv.model_comparison_metrics", "cv.model_comparison"],
            name="cv.compare_models",
        ),
        node(
            evaluation_figures,
            [*predictions, *summaries],
            [
                "cv.confusion_matrices",
                "cv.roc_curves",
                "cv.training_curves",
                "cv.reliability_diagrams",
            ],
            name="cv.evaluation_figures",
        ),
        node(
            partial(build_cv_report, folds=folds),
            [
                "manifest",
                "params:evaluation",
                "cv.model_comparison",
                *summaries,
                *[f"fold_{k}.{ns}.evaluation" for ns in namespaces for k in range(folds)],
            ],
            "cv.report",
            name="cv.build_report",
        ),
        node(
            render_report_html,
            ["cv.report", "cv.report_figures"],
            "cv.report_html",
            name="cv.render_report_html",
        ),
    ]
    return Pipeline(nodes)


def create_pipeline(folds: int | None = None, **kwargs) -> Pipeline:
    folds = folds or active().folds
    return (
        _cohort()
        + sum((_fold(k) for k in range(folds)), Pipeline([]))
        + Pipeline(
            [
                node(
                    partial(assign_folds, folds=folds),
                    ["manifest", "params:cv"],
                    [f"fold_{k}.patient_splits" for k in range(folds)],
                    name="cv.assign_folds",
                )
            ]
        )
        + _pooled(folds)
    )
