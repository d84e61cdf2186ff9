"""The `cv` pipeline: k fold namespaces over the existing stages, pooled out-of-fold results."""

from __future__ import annotations

import functools
import inspect

import pytest

from ssc_skin import model_grid
from ssc_skin.pipeline_registry import register_pipelines
from ssc_skin.pipelines import classification, cv, segmentation
from ssc_skin.pipelines.cv.pipeline import create_pipeline
from ssc_skin.pipelines.evaluation import pipeline as evaluation
from ssc_skin.pipelines.patches import pipeline as patches_pipeline


@pytest.fixture(scope="module")
def three_folds():
    return cv.create_pipeline(folds=3)


def test_each_fold_runs_the_existing_stages_unchanged_in_its_namespace(three_folds):
    stages = (
        patches_pipeline.fold_pipeline()
        + segmentation.create_pipeline()
        + classification.create_pipeline()
        + evaluation.per_model_pipeline(gradcam=False)
    )
    functions = {n.name: n.func for n in stages.nodes}
    for k in range(3):
        fold = [n for n in three_folds.nodes if n.name.startswith(f"fold_{k}.")]
        for n in fold:
            bare = n.name.removeprefix(f"fold_{k}.")
            if bare != "tag_fold_runs":
                assert functions[bare] is n.func, bare  # the stage's own node function
        names = {n.name.removeprefix(f"fold_{k}.") for n in fold}
        assert {
            "fit_stain_normalizer",
            "fold_patches",
            "train_unet",
            "binary.mobilenetv2.train_classifier",
            "three_class.cnn.evaluate_predictions",
            "binary.texture.train_texture_baseline",
            "binary.hybrid.fit_hybrid",
            "tag_fold_runs",
        } <= names
        assert "segmentation_overlays" not in names and "binary.cnn.gradcam_examples" not in names
        assert "extract_patches" not in names  # per-image work is cut once, not per fold
        assert f"fold_{k}.patient_splits" in three_folds.all_outputs()


def test_folds_share_the_cohort_and_the_cut_and_write_no_single_split_table(three_folds):
    outputs = three_folds.all_outputs()
    assert "patient_splits" not in outputs  # later single-split runs reuse that saved table
    assert {"cohort_images", "manifest", "shared_patches", "stain_estimates"} <= outputs
    assert not any(o.startswith(("fold_0.cohort_images", "fold_0.shared_")) for o in outputs)
    for k in range(3):
        fold = next(n for n in three_folds.nodes if n.name == f"fold_{k}.fold_patches")
        assert {"shared_patches", "shared_patch_index", "stain_estimates"} <= set(fold.inputs)
        assert f"fold_{k}.preprocess_config" in fold.inputs  # its own fitted normaliser
    free = {i for i in three_folds.inputs() if not i.startswith("params:")}
    assert free == {"cv.report_figures"}


def test_every_model_is_pooled_and_reported(three_folds):
    outputs = three_folds.all_outputs()
    for ns in evaluation.evaluated_namespaces():
        assert {f"cv.{ns}.evaluation", f"cv.{ns}.predictions", f"cv.{ns}.metrics"} <= outputs
        pool = next(n for n in three_folds.nodes if n.name == f"cv.{ns}.pool_model")
        assert [i for i in pool.inputs if i.endswith(".predictions")] == [
            f"fold_{k}.{ns}.predictions" for k in range(3)
        ]
    assert {"cv.report", "cv.report_html", "cv.model_comparison"} <= outputs


def test_cv_is_the_default_run_and_pretraining_is_not():
    pipelines = register_pipelines()
    assert "cv" in pipelines and "pretrain" in pipelines
    default = {n.name for n in pipelines["__default__"].nodes}
    assert {n.name for n in pipelines["cv"].nodes} <= default
    assert "pretrain_backbone" not in default


def test_fold_count_is_the_cv_folds_parameter(monkeypatch):
    parameters = {"classification": {"tasks": {"binary": {}}, "architectures": {"cnn": {}}}}
    grid = model_grid.ModelGrid.from_parameters({**parameters, "cv": {"folds": 4}})
    assert grid.folds == 4
    assert (
        len(
            {
                n.namespace.split(".")[0]
                for n in create_pipeline(grid.folds).nodes
                if n.namespace and n.namespace.startswith("fold_")
            }
        )
        == 4
    )
    with pytest.raises(model_grid.ModelGridError, match="cv.folds must be an integer >= 2"):
        model_grid.ModelGrid.from_parameters({**parameters, "cv": {"folds": "one"}})
    monkeypatch.setenv("SSC_SKIN_CV_FOLDS", "4")
    with pytest.raises(model_grid.ModelGridError, match="set the parameter cv.folds"):
        model_grid.ModelGrid.from_parameters(parameters)


def test_every_node_shows_a_named_documented_function_in_kedro_viz():
    for n in create_pipeline(2, final=True).nodes:
        assert not isinstance(n.func, functools.partial), n.name
        assert n.func.__name__ != "<lambda>" and n.func.__doc__, n.name
    assign = next(n for n in create_pipeline(2).nodes if n.name == "cv.assign_folds")
    assert list(inspect.signature(assign.func).parameters) == ["manifest", "params"]
