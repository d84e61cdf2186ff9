from pathlib import Path

import yaml

from ssc_skin.pipeline_registry import register_pipelines

PROJECT = Path(__file__).resolve().parents[1]

NAMESPACES = {
    f"{t}.{a}" for t in ("binary", "three_class") for a in ("mobilenetv2", "cnn", "densenet")
}  # densenet: disabled by default


def test_the_stages_the_single_split_study_and_the_default_are_registered():
    pipelines = register_pipelines()
    stages = ("cohort", "patches", "segmentation", "classification", "evaluation", "export")
    assert {*stages, "registry", "single_split", "cv", "__default__"} <= set(pipelines)
    single = {n.name for n in pipelines["single_split"].nodes}
    for name in (*stages, "registry"):
        assert {n.name for n in pipelines[name].nodes} <= single


def test_the_default_run_is_the_pooled_study_with_a_final_fit_that_is_exported():
    """Every patient tested once (folds), then the models a user deploys: trained on every
    patient, exported, and registered on the pooled cross-validation's validation ranking."""
    default = register_pipelines()["__default__"]
    outputs = default.all_outputs()
    assert {"cv.report", "cv.report_html", "final_patient_splits"} <= outputs
    assert {f"fold_{k}.patient_splits" for k in range(5)} <= outputs
    assert "patient_splits" not in outputs  # the single split's saved table is left alone
    assert {"binary.mobilenetv2.classifier", "binary.hybrid.classifier"} <= outputs
    register = next(n for n in default.nodes if n.name == "register_champions")
    evaluations = [i for i in register.inputs if i.endswith(".evaluation")]
    assert evaluations and all(i.startswith("cv.") for i in evaluations)
    # the per-image work is cut once: one shared-cut node, no single-split cutting
    names = [n.name for n in default.nodes]
    assert names.count("cut_shared_patches") == 1 and "extract_patches" not in names


def test_classification_runs_once_per_task_and_architecture_namespace():
    nodes = register_pipelines()["classification"].nodes
    assert {n.namespace for n in nodes} == NAMESPACES
    outputs = {o for n in nodes for o in n.outputs}
    assert {f"{ns}.classifier" for ns in NAMESPACES} <= outputs


def test_default_pipeline_ends_in_the_report_and_reads_only_parameters_and_catalog_data():
    """The default run starts from parameters (and datasets the catalog declares, such as
    the ablation table a benchmark writes); nothing it needs is left undeclared."""
    default = register_pipelines()["__default__"]
    assert "cv.report" in default.all_outputs()
    declared = set()
    for path in sorted((PROJECT / "conf" / "base").glob("catalog*.yml")):
        declared |= set(yaml.safe_load(path.read_text()) or {})
    undeclared = {
        name for name in default.inputs() if not name.startswith("params:") and name not in declared
    }
    assert not undeclared


def test_predict_screens_new_images_outside_the_default_run():
    pipelines = register_pipelines()
    default_nodes = {n.name for n in pipelines["__default__"].nodes}
    assert not {n.name for n in pipelines["predict"].nodes} & default_nodes
    assert {n.namespace for n in pipelines["export"].nodes} >= NAMESPACES
