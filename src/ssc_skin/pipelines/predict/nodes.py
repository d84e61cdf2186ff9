"""Nodes of the `predict` pipeline: new images -> checked -> patches -> every task's label."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from ssc_skin import distributed
from ssc_skin.cohort import ingest
from ssc_skin.cohort.privacy import hide_quarantine, pseudonym_key, pseudonymise_records
from ssc_skin.constants import Skipped
from ssc_skin.evaluation import figures
from ssc_skin.inference import export, fanout, predict
from ssc_skin.inference.predict import TrainedModel
from ssc_skin.inference.preprocess import PreprocessConfig, Preprocessor, selection_counts

logger = logging.getLogger(__name__)

IMAGE_COLUMNS = ["image", "patient", "image_path"]


def find_new_images(params: dict[str, Any], source: dict[str, Any], checks: dict[str, Any],
                    patch_params: dict[str, Any]
                    ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Valid images under `predict.input` (a folder or one file), with the cohort's checks.

    Returns the images to predict (pseudonyms and paths, kept in memory only), the quarantine
    report (no raw id or path in it; without patient ids every file name is hidden) and the
    local linkage table.
    """
    regex = None
    if params.get("patient_ids", True):
        regex = params.get("patient_id_regex") or source.get("patient_id_regex")
    records = predict.discover_inputs(
        params["input"], regex, patient_from=source.get("patient_from") or "filename",
        allow_outside_root=bool(source.get("allow_outside_root", False)))
    valid, quarantine = predict.validate_inputs(
        records, min_side=patch_params["patch_size"],
        min_tissue_fraction=checks["min_tissue_fraction"],
        min_saturation=patch_params.get("min_saturation", 12),
        tiff_page=source.get("tiff_page", 0))
    if valid.empty:
        logger.warning("Predict: no usable image under predict.input; see "
                       "data/08_reporting/predict_quarantine.csv")
    key = pseudonym_key()
    valid = pseudonymise_records(valid, key)
    report, _ = hide_quarantine(quarantine, records, key)
    linkage = valid[["image", "patient", "patient_id", "relative_path", "image_path"]].assign(
        image_path=lambda t: t["image_path"].map(ingest.display_text))
    logger.info("Predict: %d valid image(s), %d file(s) quarantined%s", len(valid),
                len(quarantine),
                " -> data/08_reporting/predict_quarantine.csv" if len(quarantine) else "")
    return valid[IMAGE_COLUMNS].reset_index(drop=True), report, linkage.reset_index(drop=True)


def _preprocessor(preprocess_config: dict[str, Any], unet_tflite: bytes,
                  params: dict[str, Any]) -> Preprocessor:
    """The training run's own preprocessing, gated by the UNet it exported."""
    unet = export.tflite_segmenter(unet_tflite)
    return Preprocessor(PreprocessConfig.from_dict(preprocess_config), unet)


def _task_models(trained: dict[str, TrainedModel], params: dict[str, Any],
                 tasks: dict[str, Any], architectures: dict[str, Any]
                 ) -> list[predict.TaskModel]:
    """The chosen architecture of every task asked for; tasks the cohort skipped are left out."""
    names = params.get("tasks") or list(tasks)
    unknown = [n for n in names if n not in tasks]
    if unknown or params["architecture"] not in architectures:
        raise ValueError(f"predict.tasks must be among {', '.join(tasks)} and "
                         f"predict.architecture one of {', '.join(architectures)}; got "
                         f"{names} and {params['architecture']!r}")
    architecture = architectures[params["architecture"]]
    models = []
    for name in names:
        model = predict.load_task_model(tasks[name], architecture, params["runtime"], trained,
                                        params.get("num_threads", 2))
        if isinstance(model, Skipped):
            logger.warning("Predict: task %s skipped (%s)", name, model.reason)
            continue
        logger.info("Predict: %s.%s on %s", model.task, model.architecture, model.runtime)
        models.append(model)
    if not models:
        raise ValueError("no trained classifier for any of the tasks in predict.tasks; "
                         "run `kedro run` first")
    return models


def predict_new_images(images: pd.DataFrame, preprocess_config: dict[str, Any],
                       unet_tflite: bytes, trained: dict[str, TrainedModel],
                       params: dict[str, Any], tasks: dict[str, Any],
                       architectures: dict[str, Any], tiff_page: int = 0,
                       engine: dict[str, Any] | None = None) -> pd.DataFrame:
    """Per image and task: probabilities, label, patch counts, selection and confidence flags;
    then per patient (mean of its images) where file names carry patient ids. `engine`
    (`params:engine`) may fan the images out to Dask workers; MLflow stays here."""
    models = _task_models(trained, params, tasks, architectures)
    preprocessor = _preprocessor(preprocess_config, unet_tflite, params)
    threshold = params["low_confidence_threshold"]
    fan_out = distributed.as_engine(engine)
    work = (fanout.predict_work(models, trained, preprocess_config, unet_tflite, threshold,
                                tiff_page, fan_out.threads_per_worker)
            if fan_out.kind == distributed.DASK else None)
    by_image = predict.predict_images(images, models, preprocessor, threshold, tiff_page,
                                      fan_out, work)
    by_patient = predict.patient_means(by_image, models, threshold)
    per_image = by_image.drop_duplicates("image") if len(by_image) else by_image
    counts = selection_counts(per_image["selection"]) if len(per_image) else {}
    logger.info("Predict: %d image(s) x %d task(s); %d row(s) low-confidence; images by patch "
                "selection: %s", len(images), len(models),
                int(by_image["low_confidence"].sum()) if len(by_image) else 0,
                ", ".join(f"{k}={v}" for k, v in counts.items()) or "none")
    return pd.concat([by_image, by_patient], ignore_index=True)


def gradcam_new_images(images: pd.DataFrame, predictions: pd.DataFrame,
                       preprocess_config: dict[str, Any], unet_tflite: bytes,
                       trained: dict[str, TrainedModel], params: dict[str, Any],
                       tasks: dict[str, Any], architectures: dict[str, Any],
                       tiff_page: int = 0) -> Figure:
    """Grad-CAM over the first `predict.gradcam_images` images, for the first task: where in
    each section the evidence for its predicted label lies."""
    by_image = predictions[predictions["level"] == "image"]
    if by_image.empty or params.get("gradcam_images", 0) <= 0:
        return figures.gradcam_figure([])
    task = by_image["task"].iloc[0]
    architecture = architectures[params["architecture"]]
    model = trained[f"{task}.{architecture['name']}"].keras()
    preprocessor = _preprocessor(preprocess_config, unet_tflite, params)
    classes = list(tasks[task]["classes"])
    rows = by_image[(by_image["task"] == task) & (by_image["n_patches"] > 0)]
    samples = []
    for row in rows.head(params["gradcam_images"]).itertuples(index=False):
        path = images.loc[images["image"] == row.image, "image_path"].iloc[0]
        image, _ = ingest.read_rgb(path, tiff_page)
        found = preprocessor(image)
        probability = getattr(row, f"probability_{row.label}")
        heat = predict.gradcam_heatmap(model, found, image.shape, architecture["input_size"],
                                       classes.index(row.label))
        flags = "" if row.selection == "ok" else f" ({row.selection})"
        samples.append((f"{row.image}: {task} {row.label} p={probability:.2f}{flags}",
                        image, heat))
    return figures.gradcam_figure(samples)
