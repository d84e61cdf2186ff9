"""The `classification` pipeline: one modular pipeline per task x architecture namespace."""

from pathlib import Path

import yaml
from kedro.framework.project import settings
from kedro.pipeline import Pipeline, node, pipeline

from .nodes import train_classifier

PARAMETERS_FILE = "parameters_classification.yml"


def declared_models(conf_source: Path | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(tasks, architectures) as `conf/base/parameters_classification.yml` declares them: the
    one place the task x architecture fan-out comes from (Kedro builds pipelines before it
    reads an environment's parameters, so the base file decides which namespaces exist; an
    environment configures them)."""
    folders = (
        [conf_source]
        if conf_source
        else [Path.cwd() / settings.CONF_SOURCE, Path(__file__).resolve().parents[4] / "conf"]
    )
    for folder in folders:
        path = Path(folder) / "base" / PARAMETERS_FILE
        if path.is_file():
            classification = (yaml.safe_load(path.read_text()) or {})["classification"]
            return tuple(classification["tasks"]), tuple(classification["architectures"])
    raise FileNotFoundError(f"no conf/base/{PARAMETERS_FILE} under {[str(f) for f in folders]}")


TASKS, ARCHITECTURES = declared_models()
MODEL_NAMESPACES = tuple(f"{task}.{arch}" for task in TASKS for arch in ARCHITECTURES)


def for_each_model(
    template: Pipeline, shared_parameters: dict[str, str], shared_inputs: set[str] | None = None
) -> Pipeline:
    """`template` once per task x architecture namespace, reading the shared `patches` and
    `classifier_patch_index` (plus `shared_inputs`), with `params:task` / `params:architecture`
    routed to that namespace's config blocks and `shared_parameters` passed through unchanged."""
    return sum(
        (
            pipeline(
                template,
                namespace=f"{task}.{arch}",
                inputs={"patches", "classifier_patch_index", *(shared_inputs or set())},
                parameters={
                    "params:task": f"params:classification.tasks.{task}",
                    "params:architecture": f"params:classification.architectures.{arch}",
                    **shared_parameters,
                },
            )
            for task in TASKS
            for arch in ARCHITECTURES
        ),
        Pipeline([]),
    )


def create_pipeline(**kwargs) -> Pipeline:
    template = Pipeline(
        [
            node(
                train_classifier,
                [
                    "patches",
                    "classifier_patch_index",
                    "params:task",
                    "params:architecture",
                    "params:training",
                ],
                ["classifier", "training_summary"],
                name="train_classifier",
            ),
        ]
    )
    return for_each_model(template, {"params:training": "params:classification.training"})
