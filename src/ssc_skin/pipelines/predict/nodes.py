"""Nodes of the `predict` pipeline: new images and slides -> checked -> every task's call.

Each node is a few lines over `slides.predict` (which files, images and slides together),
`inference.predict` (the models and the one `PredictSetup`) and `slides.outputs` (output
formats and the run folder). Files are read and written by the catalog.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from ssc_skin.evaluation import figures
from ssc_skin.inference import predict
from ssc_skin.inference.predict import PredictSetup, TrainedModel
from ssc_skin.preprocessing.preprocess import PreprocessConfig
from ssc_skin.slides import outputs
from ssc_skin.slides import predict as predict_inputs
from ssc_skin.slides.outputs import SlideResult


def find_new_images(
    params: dict[str, Any],
    source: dict[str, Any],
    checks: dict[str, Any],
    preprocess_config: PreprocessConfig | dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Valid images and slides under `predict.input` (pseudonyms), the quarantine report and
    the local linkage, checked with the TRAINING run's saved preprocessing."""
    return predict_inputs.find_inputs(params, source, checks, preprocess_config)


def load_predict_setup(
    preprocess_config: PreprocessConfig | dict[str, Any],
    unet_tflite: bytes,
    trained: dict[str, TrainedModel],
    params: dict[str, Any],
    tasks: dict[str, Any],
    architectures: dict[str, Any],
    source: dict[str, Any],
    engine: dict[str, Any] | None = None,
) -> PredictSetup:
    """The training run's preprocessing, UNet and chosen classifiers as one object."""
    return predict.build_setup(
        preprocess_config, unet_tflite, trained, params, tasks, architectures, source, engine
    )


def predict_new_inputs(
    images: pd.DataFrame, setup: PredictSetup
) -> tuple[pd.DataFrame, dict[str, SlideResult]]:
    """Per image or slide and task, then per patient: the predictions table; and each
    slide's result (tiles, thumbnail, calls) for the output formats."""
    return predict_inputs.predict_all(images, setup)


def gradcam_new_images(
    images: pd.DataFrame,
    predictions: pd.DataFrame,
    setup: PredictSetup,
    params: dict[str, Any],
) -> tuple[Figure, bytes]:
    """Grad-CAM over the first `predict.gradcam_images` images (not slides: their heatmaps
    are the slide outputs), for the first task; also as PNG bytes for the run's folder (the
    figure's dataset can be saved, not loaded)."""
    count = int(params.get("gradcam_images", 0) or 0)
    figure = figures.gradcam_figure(predict.gradcam_samples(images, predictions, setup, count))
    return figure, outputs.figure_png(figure)


def write_predict_run(
    predictions: pd.DataFrame,
    quarantine: pd.DataFrame,
    slide_results: dict[str, SlideResult],
    gradcam_png: bytes,
) -> dict[str, bytes]:
    """This run's folder (`<run_id>/` with its table, quarantine, Grad-CAM and every slide
    output format) and `latest.json`; earlier runs' folders are kept."""
    return outputs.run_files(
        outputs.new_run_id(),
        predictions,
        quarantine,
        slide_results,
        gradcam_png,
    )
