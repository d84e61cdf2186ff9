"""The `registry` pipeline: each task's best model (validation patients) into the Model Registry.

Every evaluated model is a candidate: the deep models, the colour + texture peer and the hybrid
(each has a whole-image predictor from the export stage), so a peer that wins is what is served.
"""

from kedro.pipeline import Pipeline, node

from ssc_skin.model_grid import ModelGrid
from ssc_skin.pipelines.evaluation.pipeline import evaluated_namespaces

from .nodes import register_champions


def create_pipeline(grid: ModelGrid | None = None, **kwargs) -> Pipeline:
    namespaces = evaluated_namespaces(grid)
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
