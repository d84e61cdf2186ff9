from ssc_skin.pipeline_registry import register_pipelines

NAMESPACES = {"binary.mobilenetv2", "binary.cnn", "three_class.mobilenetv2", "three_class.cnn"}


def test_the_five_stages_and_default_are_registered():
    pipelines = register_pipelines()
    assert {"cohort", "patches", "segmentation", "classification", "evaluation",
            "__default__"} <= set(pipelines)
    default_nodes = {n.name for n in pipelines["__default__"].nodes}
    for name in ("cohort", "patches", "segmentation", "classification", "evaluation"):
        assert {n.name for n in pipelines[name].nodes} <= default_nodes


def test_classification_runs_once_per_task_and_architecture_namespace():
    nodes = register_pipelines()["classification"].nodes
    assert {n.namespace for n in nodes} == NAMESPACES
    outputs = {o for n in nodes for o in n.outputs}
    assert {f"{ns}.classifier" for ns in NAMESPACES} <= outputs


def test_default_pipeline_ends_in_the_report():
    default = register_pipelines()["__default__"]
    assert "report" in default.all_outputs()
    assert default.inputs() <= {
        "params:cohort", "params:cohort.split", "params:patches.patch_size",
        "params:patches.min_saturation", "params:patches.stain",
        "params:export", "params:export.log_predictor",
        "params:predict.low_confidence_threshold", "params:cohort.colour_baseline",
        "params:classification.tasks", "params:patches",
        "params:segmentation.unet", "params:segmentation.selection",
        "params:classification.training", "params:evaluation",
        *(f"params:classification.tasks.{t}" for t in ("binary", "three_class")),
        *(f"params:classification.architectures.{a}" for a in ("mobilenetv2", "cnn")),
    }


def test_predict_screens_new_images_outside_the_default_run():
    pipelines = register_pipelines()
    default_nodes = {n.name for n in pipelines["__default__"].nodes}
    assert not {n.name for n in pipelines["predict"].nodes} & default_nodes
    assert {n.namespace for n in pipelines["export"].nodes} == {"binary.mobilenetv2",
                                                               "three_class.mobilenetv2"}
