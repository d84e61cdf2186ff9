from pathlib import Path

import yaml

from ssc_skin.pipeline_registry import register_pipelines

PROJECT = Path(__file__).resolve().parents[1]

NAMESPACES = {
    f"{t}.{a}" for t in ("binary", "three_class") for a in ("mobilenetv2", "cnn", "densenet")
}  # densenet: disabled by default


def test_the_five_stages_and_default_are_registered():
    pipelines = register_pipelines()
    assert {
        "cohort",
        "patches",
        "segmentation",
        "classification",
        "evaluation",
        "__default__",
    } <= set(pipelines)
    default_nodes = {n.name for n in pipelines["__default__"].nodes}
    for name in ("cohort", "patches", "segmentation", "classification", "evaluation"):
        assert {n.name for n in pipelines[name].nodes} <= default_nodes


def test_classification_runs_once_per_task_and_architecture_namespace():
    nodes = register_pipelines()["classification"].nodes
    assert {n.namespace for n in nodes} == NAMESPACES
    outputs = {o for n in nodes for o in n.outputs}
    assert {f"{ns}.classifier" for ns in NAMESPACES} <= outputs


def test_default_pipeline_ends_in_the_report_and_reads_only_parameters_and_catalog_data():
    """The default run starts from parameters (and datasets the catalog declares, such as
    the ablation table a benchmark writes); nothing it needs is left undeclared."""
    default = register_pipelines()["__default__"]
    assert "report" in default.all_outputs()
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
    assert {n.namespace for n in pipelines["export"].nodes} == NAMESPACES
