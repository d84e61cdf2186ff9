"""The `registry` pipeline: each task's best model (validation patients) into the Model Registry."""

from kedro.pipeline import Pipeline, node

from ssc_skin.pipelines.classification.pipeline import MODEL_NAMESPACES

from .nodes import register_champions


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                register_champions,
                [
                    "params:registry",
                    *[f"{ns}.evaluation" for ns in MODEL_NAMESPACES],
                    *[f"{ns}.whole_image_predictor" for ns in MODEL_NAMESPACES],
                ],
                "registered_models",
                name="register_champions",
            ),
        ]
    )
