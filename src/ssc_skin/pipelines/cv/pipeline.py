"""The `cv` pipeline: the study in k patient-grouped folds, every patient tested exactly once.

It is the default run (`kedro run`, with the final fit, export and registry added by the
pipeline registry); `kedro run --pipeline cv` runs the folds and their report alone. The
cohort is read and cut once (`patches.shared_cut_pipeline`: raw crops, masks and each image's
stain statistics); each fold `fold_k` (a Kedro namespace) runs the fitted part of the existing
`patches`, `segmentation`, `classification` and per-model `evaluation` pipelines on its own
patient split, so its stain normaliser, UNet, classifiers, peer and hybrid never see its test
patients. The out-of-fold predictions of each model are pooled and scored by the study's
evaluation code: the report's headline covers every patient of the cohort, with the per-fold
spread beside it. k = the parameter `cv.folds` (default 5; `model_grid` reads it from the run's
configuration when the pipelines are built).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from ssc_skin.model_grid import active
from ssc_skin.pipelines import classification, cohort, segmentation
from ssc_skin.pipelines.evaluation import pipeline as evaluation
from ssc_skin.pipelines.patches import pipeline as patches

from .nodes import assign_folds, build_cv_report, pool_model, pool_selection, tag_fold_runs


def bound(func: Callable[..., Any], **fixed: Any) -> Callable[..., Any]:
    """`func` with keyword arguments fixed, keeping its name, docstring and type hints.

    A bare `functools.partial` shows in kedro-viz without a name, code or types; this wrapper
    shows `func`'s, and its signature lists only what the node still passes.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **fixed, **kwargs)

    signature = inspect.signature(func)
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.name not in fixed]
    )
    return wrapper


# Read or made once per run and used by every fold: the cohort, and the per-image work no
# fold's fitting touches (raw crops, masks, provenance, each image's stain statistics).
SHARED = {
    "cohort_images",
    "cohort_masks",
    "manifest",
    "linkage",
    "shared_patches",
    "shared_patch_index",
    "stain_estimates",
}


def cohort_stage() -> Pipeline:
    """The cohort stage without its single-split table (whose saved copy later single-split
    runs reuse): cross-validation makes its own folds."""
    stage = cohort.create_pipeline()
    return stage.only_nodes(*[n.name for n in stage.nodes if "patient_splits" not in n.outputs])


def _segmentation() -> Pipeline:
    """Segmentation without its overlay figure (one per fold would say nothing new)."""
    stage = segmentation.create_pipeline()
    return stage.only_nodes(
        *[n.name for n in stage.nodes if "segmentation_overlays" not in n.outputs]
    )


def fold_stages(fold: str) -> Pipeline:
    """What one fold runs: the fitted part of every stage (stain normaliser on the shared
    crops, UNet, classifiers, peer, hybrid) on its own patient split, and the fold tag on each
    model's MLflow run."""
    tag = node(
        bound(tag_fold_runs, fold=fold),
        [f"{ns}.evaluation" for ns in evaluation.evaluated_namespaces()],
        None,
        name="tag_fold_runs",
    )
    return (
        patches.fold_pipeline()
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


def final_fit() -> Pipeline:
    """The models a user deploys: the same fitted stages on every patient (train and val, no
    test: the pooled folds are the evaluation), under the study's usual dataset names, so that
    `export`, `registry` and `predict` read them as they read a single-split study's."""
    stages = (
        patches.fold_pipeline()
        + segmentation.create_pipeline()
        + classification.create_pipeline()
        + evaluation.fitting_pipeline()
    )
    overlays = [n.name for n in stages.nodes if "segmentation_overlays" in n.outputs]
    stages = stages.only_nodes(*[n.name for n in stages.nodes if n.name not in overlays])
    return pipeline(stages, inputs={"patient_splits": "final_patient_splits"})


def _pooled(folds: int) -> Pipeline:
    """Per model, the pooled out-of-fold evaluation; then comparison, figures and report: one
    Kedro namespace `cv` (one collapsible box in kedro-viz), the evaluation stage's own
    comparison and report builders reused over the pooled results."""
    namespaces = evaluation.evaluated_namespaces()
    fold_selections = [f"fold_{k}.image_selection" for k in range(folds)]
    nodes = [node(pool_selection, fold_selections, "image_selection", name="pool_selection")]
    fold_outputs = set(fold_selections)
    for ns in namespaces:
        task = ns.split(".")[0]
        per_fold = [
            f"fold_{k}.{ns}.{kind}"
            for kind in ("predictions", "training_summary")
            for k in range(folds)
        ]
        fold_outputs |= set(per_fold)
        nodes.append(
            node(
                pool_model,
                [
                    f"params:classification.tasks.{task}",
                    "params:evaluation",
                    "image_selection",
                    *per_fold,
                ],
                [f"{ns}.metrics", f"{ns}.evaluation", f"{ns}.predictions"],
                name=f"{ns}.pool_model",
            )
        )
    fold_evaluations = [f"fold_{k}.{ns}.evaluation" for ns in namespaces for k in range(folds)]
    nodes.append(
        node(
            bound(build_cv_report, folds=folds),
            [
                "manifest",
                "params:evaluation",
                "model_comparison",
                *[f"{ns}.evaluation" for ns in namespaces],
                *fold_evaluations,
            ],
            "report",
            name="build_report",
        )
    )
    pooled = (
        Pipeline(nodes)
        + evaluation.comparison_pipeline(summary="evaluation")
        + evaluation.report_html_pipeline()
    )
    return pipeline(
        pooled,
        namespace="cv",
        inputs={"manifest", *fold_outputs, *fold_evaluations},
        parameters={p: p for p in pooled.inputs() if p.startswith("params:")},
    )


def create_pipeline(folds: int | None = None, final: bool = False, **kwargs) -> Pipeline:
    """Cohort, shared cut, k folds and their pooled evaluation; with `final`, also the final
    fit on every patient (the study's default run adds export and registry to it)."""
    folds = folds or active().folds
    outputs = [f"fold_{k}.patient_splits" for k in range(folds)]
    assign = node(
        bound(assign_folds, folds=folds, final=final),
        ["manifest", "params:cv"],
        [*outputs, "final_patient_splits"] if final else outputs,
        name="cv.assign_folds",
    )
    return (
        cohort_stage()
        + patches.shared_cut_pipeline()
        + sum((_fold(k) for k in range(folds)), Pipeline([]))
        + Pipeline([assign])
        + _pooled(folds)
        + (final_fit() if final else Pipeline([]))
    )
