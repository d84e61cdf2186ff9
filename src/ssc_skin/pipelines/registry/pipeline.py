"""The `registry` pipeline: each task's best model (validation patients) into the Model Registry."""

from kedro.pipeline import Pipeline, node

from ssc_skin.model_grid import ModelGrid, active

from .nodes import register_champions


def create_pipeline(grid: ModelGrid | None = None, **kwargs) -> Pipeline:
    namespaces = (grid or active()).namespaces
    return Pipeline(
        [
            node(
                register_champions,
                [
                    "params:registry",
                    *[f"{ns}.evaluation" for ns in namespaces],
                    *[f"{ns}.whole_image_predictor" for ns in namespaces],
                ],
                "registered_models",
                name="register_champions",
            ),
        ]
    )
