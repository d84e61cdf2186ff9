"""The `predict` pipeline (not in `__default__`): the trained study as a screening tool.

`kedro run --pipeline predict --params predict.input=/path/to/images` classifies new images
and whole-slide images with the latest run's models; the folder is only read. Slides also
get a heatmap PNG and a QuPath GeoJSON (data/07_model_output/slides/).
"""

from kedro.pipeline import Pipeline, node

from .nodes import find_new_images, gradcam_new_images, predict_new_inputs


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                find_new_images,
                [
                    "params:predict",
                    "params:cohort.source",
                    "params:cohort.checks",
                    "preprocess_config",
                ],
                ["new_images", "predict_quarantine", "predict_linkage"],
                name="find_new_images",
            ),
            node(
                predict_new_inputs,
                [
                    "new_images",
                    "preprocess_config",
                    "unet_tflite",
                    "trained_models",
                    "params:predict",
                    "params:classification.tasks",
                    "params:classification.architectures",
                    "params:cohort.source.tiff_page",
                    "params:engine",
                    "params:cohort.source",
                ],
                ["new_image_predictions", "slide_heatmaps", "slide_geojson"],
                name="predict_new_images",
            ),
            node(
                gradcam_new_images,
                [
                    "new_images",
                    "new_image_predictions",
                    "preprocess_config",
                    "unet_tflite",
                    "trained_models",
                    "params:predict",
                    "params:classification.tasks",
                    "params:classification.architectures",
                    "params:cohort.source.tiff_page",
                ],
                "new_image_gradcam",
                name="gradcam_new_images",
            ),
        ]
    )
