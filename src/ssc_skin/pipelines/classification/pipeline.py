"""The `classification` pipeline: one modular pipeline per task x architecture namespace."""

from kedro.pipeline import Pipeline, node, pipeline

from ssc_skin.model_grid import ModelGrid, active

from .nodes import train_classifier


def for_each_model(
    template: Pipeline,
    shared_parameters: dict[str, str],
    shared_inputs: set[str] | None = None,
    grid: ModelGrid | None = None,
) -> Pipeline:
    """`template` once per task x architecture namespace, reading the shared `patches` and
    `classifier_patch_index` (plus `shared_inputs`), with `params:task` / `params:architecture`
    routed to that namespace's config blocks and `shared_parameters` passed through unchanged.
    The grid is the run configuration's (`model_grid.active()`) unless given."""
    grid = grid or active()
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
            for task in grid.tasks
            for arch in grid.architectures
        ),
        Pipeline([]),
    )


def create_pipeline(grid: ModelGrid | None = None, **kwargs) -> Pipeline:
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
    return for_each_model(
        template, {"params:training": "params:classification.training"}, grid=grid
    )
