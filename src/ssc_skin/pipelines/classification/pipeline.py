"""The `classification` pipeline: one modular pipeline per task x architecture namespace."""

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import train_classifier

TASKS = ("binary", "three_class")
ARCHITECTURES = ("mobilenetv2", "cnn")


def namespace_parameters(task: str, architecture: str,
                         with_training: bool = True) -> dict[str, str]:
    """Route the shared config blocks into one namespace's generic parameter names."""
    mapping = {
        "params:task": f"params:classification.tasks.{task}",
        "params:architecture": f"params:classification.architectures.{architecture}",
    }
    if with_training:
        mapping["params:training"] = "params:classification.training"
    return mapping


def create_pipeline(**kwargs) -> Pipeline:
    template = Pipeline(
        [
            node(train_classifier,
                 ["patches", "classifier_patch_index", "params:task", "params:architecture",
                  "params:training"],
                 ["classifier", "training_summary"], name="train_classifier"),
        ]
    )
    return sum(
        (pipeline(template, namespace=f"{task}.{arch}",
                  inputs={"patches", "classifier_patch_index"},
                  parameters=namespace_parameters(task, arch))
         for task in TASKS for arch in ARCHITECTURES),
        Pipeline([]),
    )
