"""Nodes of the `predict` pipeline: new images -> checked -> patches -> every task's label."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from ssc_skin import distributed
from ssc_skin.cohort import ingest
from ssc_skin.cohort.privacy import hide_quarantine, pseudonym_key, pseudonymise_records
from ssc_skin.constants import Skipped
from ssc_skin.evaluation import figures
from ssc_skin.inference import export, fanout, predict
from ssc_skin.inference.predict import TrainedModel
from ssc_skin.preprocessing.preprocess import PreprocessConfig, Preprocessor, selection_counts
from ssc_skin.preprocessing.slides import SlideSettings
from ssc_skin.slides import predict as predict_slides

logger = logging.getLogger(__name__)

IMAGE_COLUMNS = ["image", "patient", "image_path", "kind"]
SLIDE, IMAGE = "slide", "image"


def slide_settings(
    preprocess_config: PreprocessConfig | dict[str, Any] | None, source: dict[str, Any]
) -> SlideSettings:
    """How slides are cut: the TRAINING run's settings (its saved `preprocess_config`), with
    `cohort.source.microns_per_pixel` as the fallback for slides without metadata."""
    config = PreprocessConfig.from_dict(preprocess_config or {})
    return SlideSettings.from_config(config, fallback_mpp=source.get("microns_per_pixel"))


def find_new_images(
    params: dict[str, Any],
    source: dict[str, Any],
    checks: dict[str, Any],
    preprocess_config: PreprocessConfig | dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Valid images and slides under `predict.input` (a folder or one file), with the
    cohort's checks; images and slides alike are measured with the TRAINING run's saved
    preprocessing (patch size, glass threshold, slide geometry), never today's `patches`.

    Returns the images to predict (pseudonyms, paths kept in memory only, `kind` image or
    slide), the quarantine report of both (no raw id or path in it; without patient ids
    every file name is hidden) and the local linkage table.
    """
    regex = None
    if params.get("patient_ids", True):
        regex = params.get("patient_id_regex") or source.get("patient_id_regex")
    records = predict.discover_inputs(
        params["input"],
        regex,
        patient_from=source.get("patient_from") or "filename",
        allow_outside_root=bool(source.get("allow_outside_root", False)),
    )
    is_slide = predict_slides.mark_slides(records)
    config = PreprocessConfig.from_dict(preprocess_config or {})
    valid_images, quarantine_images = predict.validate_inputs(
        records[~is_slide],
        min_side=config.patch_size,
        min_tissue_fraction=checks["min_tissue_fraction"],
        min_saturation=config.min_saturation,
        tiff_page=source.get("tiff_page", 0),
    )
    frames = [valid_images.assign(kind=IMAGE)]
    quarantines = [quarantine_images]
    if is_slide.any():
        valid_slides, quarantine_slides = _validate_slides(records[is_slide], config, source)
        frames.append(valid_slides.assign(kind=SLIDE))
        quarantines.append(quarantine_slides)
    valid = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    quarantine = pd.concat([q for q in quarantines if len(q)] or quarantines[:1], ignore_index=True)
    if valid.empty:
        logger.warning(
            "Predict: no usable image or slide under predict.input; see "
            "data/08_reporting/predict_quarantine.csv"
        )
    key = pseudonym_key()
    valid = pseudonymise_records(valid, key)
    report, _ = hide_quarantine(quarantine, records, key)
    linkage = valid[["image", "patient", "patient_id", "relative_path", "image_path"]].assign(
        image_path=lambda t: t["image_path"].map(ingest.display_text)
    )
    logger.info(
        "Predict: %d valid image(s), %d valid slide(s), %d file(s) quarantined%s",
        int((valid["kind"] == IMAGE).sum()),
        int((valid["kind"] == SLIDE).sum()),
        len(quarantine),
        " -> data/08_reporting/predict_quarantine.csv" if len(quarantine) else "",
    )
    return valid[IMAGE_COLUMNS].reset_index(drop=True), report, linkage.reset_index(drop=True)


def _validate_slides(
    records: pd.DataFrame, config: PreprocessConfig, source: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cohort's slide checks with the training run's geometry; a slide qualifies with
    one tile of the fallback tissue share, as in the cohort stage (`ingest_slides`)."""
    return predict_slides.validate_slide_inputs(
        records,
        patch_size=config.patch_size,
        stride=config.stride,
        settings=slide_settings(config, source),
        min_tissue_fraction=config.lowest_tissue_fraction,
        min_saturation=config.min_saturation,
    )


def _preprocessor(
    preprocess_config: dict[str, Any], unet_tflite: bytes, params: dict[str, Any]
) -> Preprocessor:
    """The training run's own preprocessing, gated by the UNet it exported."""
    unet = export.tflite_segmenter(unet_tflite)
    return Preprocessor(PreprocessConfig.from_dict(preprocess_config), unet)


def _task_models(
    trained: dict[str, TrainedModel],
    params: dict[str, Any],
    tasks: dict[str, Any],
    architectures: dict[str, Any],
) -> list[predict.TaskModel]:
    """The chosen architecture of every task asked for; tasks the cohort skipped are left out."""
    names = params.get("tasks") or list(tasks)
    unknown = [n for n in names if n not in tasks]
    if unknown or params["architecture"] not in architectures:
        raise ValueError(
            f"predict.tasks must be among {', '.join(tasks)} and "
            f"predict.architecture one of {', '.join(architectures)}; got "
            f"{names} and {params['architecture']!r}"
        )
    architecture = architectures[params["architecture"]]
    models = []
    for name in names:
        model = predict.load_task_model(
            tasks[name], architecture, params["runtime"], trained, params.get("num_threads", 2)
        )
        if isinstance(model, Skipped):
            logger.warning("Predict: task %s skipped (%s)", name, model.reason)
            continue
        logger.info("Predict: %s.%s on %s", model.task, model.architecture, model.runtime)
        models.append(model)
    if not models:
        raise ValueError(
            "no trained classifier for any of the tasks in predict.tasks; run `kedro run` first"
        )
    return models


def predict_new_images(
    images: pd.DataFrame,
    preprocess_config: dict[str, Any],
    unet_tflite: bytes,
    trained: dict[str, TrainedModel],
    params: dict[str, Any],
    tasks: dict[str, Any],
    architectures: dict[str, Any],
    tiff_page: int = 0,
    engine: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """`predict_new_inputs`' table alone (slides' rows included, their pictures not)."""
    return predict_new_inputs(
        images,
        preprocess_config,
        unet_tflite,
        trained,
        params,
        tasks,
        architectures,
        tiff_page,
        engine,
        source,
    )[0]


def predict_new_inputs(
    images: pd.DataFrame,
    preprocess_config: dict[str, Any],
    unet_tflite: bytes,
    trained: dict[str, TrainedModel],
    params: dict[str, Any],
    tasks: dict[str, Any],
    architectures: dict[str, Any],
    tiff_page: int = 0,
    engine: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[str, Image.Image], dict[str, dict[str, Any]]]:
    """The predict node. Per image or slide and task: probabilities, label, patch counts, selection and
    confidence flags (`kind` image | slide); then per patient (mean of its images and slides)
    where file names carry patient ids. Per slide also a heatmap (PNG) and a QuPath GeoJSON,
    keyed by slide pseudonym ({} without slides). `engine` (`params:engine`) may fan the
    images out to Dask workers (slides run here); MLflow stays here."""
    models = _task_models(trained, params, tasks, architectures)
    preprocessor = _preprocessor(preprocess_config, unet_tflite, params)
    threshold = params["low_confidence_threshold"]
    kinds = images["kind"] if "kind" in images.columns else pd.Series(IMAGE, images.index)
    plain, slide_table = images[kinds != SLIDE], images[kinds == SLIDE]
    fan_out = distributed.as_engine(engine)
    work = (
        fanout.predict_work(
            models,
            trained,
            preprocess_config,
            unet_tflite,
            threshold,
            tiff_page,
            fan_out.threads_per_worker,
        )
        if fan_out.kind == distributed.DASK and len(plain)
        else None
    )
    by_image = predict_slides.with_kind(
        predict.predict_images(plain, models, preprocessor, threshold, tiff_page, fan_out, work)
    )
    outputs: dict[str, predict_slides.SlideOutputs] = {}
    if len(slide_table):
        by_slide, outputs = predict_slides.predict_slides(
            slide_table,
            models,
            preprocessor,
            threshold,
            slide_settings(preprocess_config, source or {}),
        )
        by_image = pd.concat(
            [t for t in (by_image, by_slide) if len(t)] or [by_image], ignore_index=True
        )
    by_patient = _with_patient_kinds(predict.patient_means(by_image, models, threshold), by_image)
    per_image = by_image.drop_duplicates("image") if len(by_image) else by_image
    counts = selection_counts(per_image["selection"]) if len(per_image) else {}
    logger.info(
        "Predict: %d image(s) and %d slide(s) x %d task(s); %d row(s) low-confidence; "
        "by patch selection: %s",
        len(plain),
        len(slide_table),
        len(models),
        int(by_image["low_confidence"].sum()) if len(by_image) else 0,
        ", ".join(f"{k}={v}" for k, v in counts.items()) or "none",
    )
    heatmaps = {name: Image.fromarray(out.heatmap) for name, out in outputs.items()}
    geojson = {name: out.geojson for name, out in outputs.items()}
    return pd.concat([by_image, by_patient], ignore_index=True), heatmaps, geojson


def _with_patient_kinds(by_patient: pd.DataFrame, by_image: pd.DataFrame) -> pd.DataFrame:
    """Patient rows' `kind`: what they average (image, slide, or image+slide)."""
    kinds = (
        by_image.dropna(subset=["patient"])
        .groupby("patient")["kind"]
        .agg(lambda k: "+".join(sorted(set(k))))
        if len(by_image)
        else pd.Series()
    )
    table = predict_slides.with_kind(by_patient)
    table["kind"] = table["patient"].map(kinds).astype(object)
    return table


def gradcam_new_images(
    images: pd.DataFrame,
    predictions: pd.DataFrame,
    preprocess_config: dict[str, Any],
    unet_tflite: bytes,
    trained: dict[str, TrainedModel],
    params: dict[str, Any],
    tasks: dict[str, Any],
    architectures: dict[str, Any],
    tiff_page: int = 0,
) -> Figure:
    """Grad-CAM over the first `predict.gradcam_images` images, for the first task: where in
    each section the evidence for its predicted label lies."""
    by_image = predictions[predictions["level"] == "image"]
    if "kind" in by_image.columns:  # a slide is never read whole: its heatmap is the PNG
        by_image = by_image[by_image["kind"] != SLIDE]
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
        heat = predict.gradcam_heatmap(
            model, found, image.shape, architecture["input_size"], classes.index(row.label)
        )
        flags = "" if row.selection == "ok" else f" ({row.selection})"
        samples.append((f"{row.image}: {task} {row.label} p={probability:.2f}{flags}", image, heat))
    return figures.gradcam_figure(samples)
