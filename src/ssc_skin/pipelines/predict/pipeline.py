"""The `predict` pipeline (not in `__default__`): the trained study as a screening tool.

`kedro run --pipeline predict --params predict.input=/path/to/images` classifies new images
and whole-slide images with the latest run's models; the folder is only read. Each run keeps
its own folder, `data/07_model_output/predict/<run_id>/` (table, quarantine, Grad-CAM, and per
slide every output format of `slides.outputs.OUTPUT_FORMATS`); `latest.json` names the newest,
and `data/08_reporting/predictions/predictions.csv` is the newest table.
"""

from kedro.pipeline import Pipeline, node

from .nodes import (
    find_new_images,
    gradcam_new_images,
    load_predict_setup,
    predict_new_inputs,
    write_predict_run,
)


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
                load_predict_setup,
                [
                    "preprocess_config",
                    "unet_tflite",
                    "trained_models",
                    "params:predict",
                    "params:classification.tasks",
                    "params:classification.architectures",
                    "params:cohort.source",
                    "params:engine",
                ],
                "predict_setup",
                name="load_predict_setup",
            ),
            node(
                predict_new_inputs,
                ["new_images", "predict_setup"],
                ["new_image_predictions", "slide_results"],
                name="predict_new_images",
            ),
            node(
                gradcam_new_images,
                ["new_images", "new_image_predictions", "predict_setup", "params:predict"],
                ["new_image_gradcam", "new_image_gradcam_png"],
                name="gradcam_new_images",
            ),
            node(
                write_predict_run,
                [
                    "new_image_predictions",
                    "predict_quarantine",
                    "slide_results",
                    "new_image_gradcam_png",
                ],
                "predict_runs",
                name="write_predict_run",
            ),
        ]
    )
