"""Prediction of new images: every task's classifier after the training run's preprocessing.

New images go through exactly what training images went through: the cohort's file checks,
then `preprocessing.preprocess.Preprocessor` (tissue detection, grid tiling, the fitted stain
normaliser, UNet dermis gating, the same fallbacks), then every task's classifier; patch
probabilities are averaged per image and, where file names carry patient ids, per patient.
No Kedro here.

New images are only read. Identifiers leave as keyed pseudonyms only; the local linkage table
is the one place that maps them back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ssc_skin import aggregation, distributed
from ssc_skin.cohort import ingest
from ssc_skin.constants import Skipped
from ssc_skin.imaging import tiling
from ssc_skin.imaging.tissue import MIN_SATURATION
from ssc_skin.inference import export, fanout, serving
from ssc_skin.models import gradcam
from ssc_skin.preprocessing.preprocess import ImagePatches, PreprocessConfig, Preprocessor
from ssc_skin.preprocessing.slides import SlideSettings

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

RUNTIME_CHOICES = ("auto", "keras", "tflite")
UNLABELLED = "unlabelled"  # the one 'label' of images to predict, for ingestion's checks
# Stands in for a missing patient id during validation: duplicates among id-less files are
# then plain duplicates (the first is kept). The regex group [A-Za-z0-9]+ never yields '<'.
_NO_PATIENT = "<no patient id>"

Predictor = Callable[[np.ndarray], np.ndarray]
Loader = Callable[[], Any]


# --- prediction: which files --------------------------------------------------------------


def discover_inputs(
    path: str | Path,
    patient_id_regex: str | None,
    *,
    patient_from: str = "filename",
    allow_outside_root: bool = False,
) -> pd.DataFrame:
    """Ingestion records (one per file) for a folder, searched recursively, or one file.

    The folder needs no label subfolders; without a regex (or when it does not match) an
    image simply has no patient id. `patient_from="folder"`: the patient is the first folder
    (``<input>/<patient>/**/<image>``). Links leading out of the folder are quarantined
    (`outside_root`) unless `allow_outside_root`.
    """
    source = Path(path).expanduser()
    regex = patient_id_regex or ingest.DEFAULT_PATIENT_ID_REGEX
    if source.is_dir():
        records = ingest.discover_folder(
            source,
            regex,
            patient_from=patient_from,
            allow_outside_root=allow_outside_root,
            label_folders=False,
        )
        optional = records["problem_check"].isin(["no_label_folder", "no_patient_id"])
        records.loc[optional, ["problem_check", "problem"]] = None
    elif source.is_file():
        name = ingest.display_text(source.name)
        match = ingest.compile_patient_regex(regex).search(name)
        record = dict.fromkeys(ingest.RECORD_COLUMNS)
        record.update(
            image_path=str(source),
            relative_path=name,
            patient_id=match.group("patient") if match and patient_from != "folder" else None,
        )
        if source.suffix.lower() not in ingest.IMAGE_EXTENSIONS:
            record.update(
                problem_check="not_image_extension",
                problem=f"not an image extension ({ingest.display_text(source.suffix) or 'none'})",
            )
        records = pd.DataFrame([record], columns=ingest.RECORD_COLUMNS)
    else:
        raise ValueError(
            f"predict.input is neither a folder nor a file ({ingest.display_text(source.name)})"
        )
    if patient_id_regex is None:
        records["patient_id"] = None
    return records.assign(raw_label=UNLABELLED)


def validate_inputs(
    records: pd.DataFrame,
    *,
    min_side: int,
    min_tissue_fraction: float,
    min_saturation: int = MIN_SATURATION,
    tiff_page: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cohort's checks on images without labels: (valid images, quarantine table).

    Decoding, size, tissue and duplicate checks are ingestion's own; all images carry one
    stand-in label, and images without a patient id one stand-in patient, so that the
    label and patient checks pass and a repeated image is reported as a duplicate.
    """
    records = records.copy()
    records["patient_id"] = records["patient_id"].where(records["patient_id"].notna(), _NO_PATIENT)
    valid, quarantine = ingest.validate_cohort(
        records,
        label_map={},
        allowed_labels=(UNLABELLED,),
        min_side=min_side,
        min_tissue_fraction=min_tissue_fraction,
        min_saturation=min_saturation,
        tiff_page=tiff_page,
    )
    valid["patient_id"] = valid["patient_id"].where(valid["patient_id"] != _NO_PATIENT, None)
    return valid, quarantine


# --- prediction: the models ------------------------------------------------------------------


@dataclass(frozen=True)
class TrainedModel:
    """One `<task>.<arch>` model left by a training run, each file loaded only on demand."""

    name: str
    keras: Callable[[], keras.Model] | None
    tflite: Callable[[], bytes] | None
    export_summary: dict[str, Any] | None
    skipped: str | None  # why the run did not train it


@dataclass
class TaskModel:
    """One task's classifier as predict runs it."""

    task: str
    architecture: str
    class_names: tuple[str, ...]
    input_size: int
    runtime: str
    predict: Predictor
    keras_model: Loader  # for Grad-CAM, loaded only when asked for

    def probabilities(self, patches: np.ndarray) -> np.ndarray:
        if len(patches) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        return self.predict(tiling.resize_batch(patches, self.input_size))


def resolve_runtime(requested: str, export_summary: Mapping[str, Any] | None) -> str:
    """`auto`: what the export chose for this model (Keras when it was not exported)."""
    if requested not in RUNTIME_CHOICES:
        raise ValueError(
            f"predict.runtime must be one of {', '.join(RUNTIME_CHOICES)}; got {requested!r}"
        )
    if requested == "tflite":
        return export.FLOAT32
    if requested == export.KERAS or not export_summary:
        return export.KERAS
    return str(export_summary.get("runtime", export.KERAS))


def load_task_model(
    task: Mapping[str, Any],
    architecture: Mapping[str, Any],
    runtime: str,
    trained: Mapping[str, TrainedModel],
    num_threads: int = 2,
) -> TaskModel | Skipped:
    """The trained classifier of one task, on the runtime asked for (or chosen by export);
    only that model's file is loaded."""
    name = f"{task['name']}.{architecture['name']}"
    model = trained.get(name)
    if model is not None and model.skipped:
        return Skipped(model.skipped)
    if model is None or model.keras is None:
        raise ValueError(
            f"no trained model for {name} in data/06_models: run `kedro run` first to train it"
        )
    chosen = resolve_runtime(runtime, model.export_summary)
    if chosen == export.FLOAT32:
        if model.tflite is None:
            raise ValueError(
                f"no TFLite model for {name} in data/06_models: run "
                "`kedro run --pipeline export`, or set predict.runtime: keras"
            )
        classifier = export.TFLiteClassifier(model.tflite(), num_threads).predict
    else:
        classifier = serving.locked(export.keras_predictor(model.keras()))
    return TaskModel(
        task["name"],
        architecture["name"],
        tuple(task["classes"]),
        architecture["input_size"],
        chosen,
        classifier,
        model.keras,
    )


def select_models(
    trained: Mapping[str, TrainedModel],
    params: Mapping[str, Any],
    tasks: Mapping[str, Any],
    architectures: Mapping[str, Any],
) -> list[TaskModel]:
    """The chosen architecture of every task asked for (`predict.tasks`, `.architecture`,
    `.runtime`); tasks the training run skipped are left out with a warning."""
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
        model = load_task_model(
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


@dataclass
class PredictSetup:
    """Everything predict runs with, built once: the training run's preprocessing (its saved
    config, gated by the UNet it exported), every task's classifier, how slides are cut, and
    how images are fanned out. Nodes pass this one object instead of ten inputs."""

    models: list[TaskModel]
    preprocessor: Preprocessor
    low_confidence_threshold: float
    slide_settings: SlideSettings
    tiff_page: int = 0
    engine: distributed.EngineConfig | None = None
    work: fanout.PredictWork | Skipped | None = None  # Dask workers' copy (TFLite bytes)

    @property
    def class_names(self) -> dict[str, tuple[str, ...]]:
        return {m.task: tuple(m.class_names) for m in self.models}


def build_setup(
    preprocess_config: PreprocessConfig | Mapping[str, Any],
    unet_tflite: bytes,
    trained: Mapping[str, TrainedModel],
    params: Mapping[str, Any],
    tasks: Mapping[str, Any],
    architectures: Mapping[str, Any],
    source: Mapping[str, Any] | None = None,
    engine: Mapping[str, Any] | None = None,
) -> PredictSetup:
    """`PredictSetup` from the training run's files and the `predict`, `classification`
    (tasks, architectures), `cohort.source` (tiff page, fallback mpp) and `engine` parameters."""
    source = source or {}
    config = PreprocessConfig.from_dict(preprocess_config)
    models = select_models(trained, params, tasks, architectures)
    preprocessor = Preprocessor(config, export.tflite_segmenter(unet_tflite))
    threshold = float(params["low_confidence_threshold"])
    tiff_page = int(source.get("tiff_page", 0) or 0)
    fan_out = distributed.as_engine(engine)
    work = (
        fanout.predict_work(
            models,
            trained,
            config.to_dict(),
            unet_tflite,
            threshold,
            tiff_page,
            fan_out.threads_per_worker,
        )
        if fan_out.kind == distributed.DASK
        else None
    )
    settings = SlideSettings.from_config(config, fallback_mpp=source.get("microns_per_pixel"))
    return PredictSetup(models, preprocessor, threshold, settings, tiff_page, fan_out, work)


# --- prediction: the table -------------------------------------------------------------------


def predict_images(
    images: pd.DataFrame,
    models: Sequence[TaskModel],
    preprocessor: Preprocessor,
    low_confidence_threshold: float,
    tiff_page: int = 0,
    engine: Mapping[str, Any] | None = None,
    work: fanout.PredictWork | Skipped | None = None,
) -> pd.DataFrame:
    """One row per image and task: mean patch probabilities, label, counts and flags.

    `images` needs `image_path`, `image` and `patient` (pseudonyms); only pseudonyms come out.
    Patches are cut once per image and shared by every task's model. With `engine.kind: dask`
    each image is `fanout.image_rows` on a Dask worker, which rebuilds the models from
    `work` (`fanout.predict_work`: TFLite bytes, never a live model); the rows are the same.
    """
    config = distributed.as_engine(engine)
    if images.empty:  # no cluster to start for nothing
        return order_columns(pd.DataFrame([]), models)
    if config.kind == distributed.DASK and not isinstance(work, fanout.PredictWork):
        logger.info(
            "Predict: engine.kind is dask but images run in this process: %s",
            work.reason if isinstance(work, Skipped) else "no worker inputs given",
        )
        config = distributed.EngineConfig(progress_seconds=config.progress_seconds)
    records = images[["image", "patient", "image_path"]].to_dict("records")
    if config.kind == distributed.DASK:
        per_image = distributed.map_ordered(
            fanout.predict_image_on_worker,
            records,
            config,
            shared=work,
            total=len(records),
            label="images",
        )
    else:
        per_image = distributed.map_ordered(
            partial(
                fanout.image_rows,
                models=models,
                preprocessor=preprocessor,
                low_confidence_threshold=low_confidence_threshold,
                tiff_page=tiff_page,
            ),
            records,
            config,
            total=len(records),
            label="images",
        )
    rows = [row for image_rows in per_image for row in image_rows]
    return order_columns(pd.DataFrame(rows), models)


def patient_means(
    image_rows: pd.DataFrame, models: Sequence[TaskModel], low_confidence_threshold: float
) -> pd.DataFrame:
    """Per patient and task: the mean over all of its images' classified patches (each image
    weighs by its patch count: `aggregation.pooled_mean`, the study's patient rule).

    Images without a patient id have no patient row.
    """
    rows = []
    known = image_rows[image_rows["patient"].notna()] if len(image_rows) else image_rows
    for model in models:
        columns = [f"probability_{c}" for c in model.class_names]
        of_task = known[known["task"] == model.task]
        for patient, part in of_task.groupby("patient", sort=True):
            selection = "ok" if (part["selection"] == "ok").all() else "includes_fallback"
            summary = serving.summarise_mean(
                aggregation.pooled_mean(part[columns].to_numpy(), part["n_patches"].to_numpy()),
                int(part["n_patches"].sum()),
                model.class_names,
                low_confidence_threshold,
                selection,
            )
            rows.append(
                {
                    "level": "patient",
                    "image": None,
                    "patient": patient,
                    "task": model.task,
                    "architecture": model.architecture,
                    "runtime": model.runtime,
                    **summary,
                    "n_patches": int(part["n_patches"].sum()),
                    "n_tissue_patches": int(part["n_tissue_patches"].sum()),
                    "n_images": len(part),
                }
            )
    return order_columns(pd.DataFrame(rows), models)


def order_columns(table: pd.DataFrame, models: Sequence[TaskModel]) -> pd.DataFrame:
    """A fixed column order; every task's probability columns (NaN where not its class)."""
    classes = list(dict.fromkeys(c for m in models for c in m.class_names))
    columns = [
        "level",
        "image",
        "patient",
        "task",
        "architecture",
        "runtime",
        "label",
        *(f"probability_{c}" for c in classes),
        "n_patches",
        "n_tissue_patches",
        "n_images",
        "selection",
        "low_confidence",
        "microns_per_pixel",  # slides: level-0 resolution used and where it came from
        "mpp_source",
    ]
    return table.reindex(columns=columns)


# --- prediction: Grad-CAM ----------------------------------------------------------------------


def gradcam_samples(
    images: pd.DataFrame, predictions: pd.DataFrame, setup: PredictSetup, count: int
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(caption, image, heatmap) for the first `count` images with classified patches, for
    the first task: where in each section the evidence for its predicted label lies. Slides
    are never read whole (their heatmaps are the slide outputs)."""
    by_image = predictions[predictions["level"] == "image"]
    if "kind" in by_image.columns:
        by_image = by_image[by_image["kind"] != "slide"]
    if by_image.empty or count <= 0:
        return []
    model = next(m for m in setup.models if m.task == by_image["task"].iloc[0])
    keras_model = model.keras_model()
    rows = by_image[(by_image["task"] == model.task) & (by_image["n_patches"] > 0)]
    samples = []
    for row in rows.head(count).itertuples(index=False):
        path = images.loc[images["image"] == row.image, "image_path"].iloc[0]
        image, _ = ingest.read_rgb(path, setup.tiff_page)
        heat = gradcam_heatmap(
            keras_model,
            setup.preprocessor(image),
            image.shape,
            model.input_size,
            list(model.class_names).index(row.label),
        )
        probability = getattr(row, f"probability_{row.label}")
        flags = "" if row.selection == "ok" else f" ({row.selection})"
        samples.append(
            (f"{row.image}: {model.task} {row.label} p={probability:.2f}{flags}", image, heat)
        )
    return samples


def gradcam_heatmap(
    model: keras.Model,
    found: ImagePatches,
    image_shape: tuple[int, ...],
    input_size: int,
    class_index: int,
) -> np.ndarray:
    """Grad-CAM of every classified patch, weighted by its probability for `class_index` and
    put back at its place: where in the section the evidence for the label lies."""
    heat = np.zeros(image_shape[:2], np.float32)
    patches = found.used_patches
    if len(patches) == 0:
        return heat
    inputs = tiling.resize_batch(patches, input_size).astype(np.float32)
    maps = gradcam.grad_cam(model, inputs, class_index)
    weights = np.asarray(model.predict_on_batch(inputs))[:, class_index]
    size = patches.shape[1]
    for cam, weight, tile in zip(maps, weights, found.used_tiles, strict=True):
        heat[tile.y : tile.y + size, tile.x : tile.x + size] = (
            tiling.resize_batch(cam[None], size)[0] * weight
        )
    return heat / max(float(heat.max()), 1e-6)
