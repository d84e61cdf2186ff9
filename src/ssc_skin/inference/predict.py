"""From study to screening tool: choosing the runtime to serve, and predicting new images.

Two halves, no Kedro here:

- *Export*: a trained classifier becomes TFLite float32 and int8; both are checked against the
  Keras model on held-out patches and timed beside it, and the faster runtime that still says
  the same (label agreement above a threshold) is recorded as the one to predict with.
- *Prediction*: new images go through exactly what training images went through (the same
  validation, tissue detection, grid tiling, fitted stain normaliser and UNet dermis gating),
  then every task's classifier; patch probabilities are averaged per image and, where file
  names carry patient ids, per patient.

New images are only read. Identifiers leave as keyed pseudonyms only; the local linkage table
is the one place that maps them back.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ssc_skin.cohort import ingest
from ssc_skin.constants import MASK_CLASSES, Skipped
from ssc_skin.imaging import stain, tiling
from ssc_skin.imaging.tissue import tissue_mask
from ssc_skin.inference import export, serving
from ssc_skin.models import gradcam, training

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

KERAS, FLOAT32, INT8 = "keras", "tflite_float32", "tflite_int8"
RUNTIME_CHOICES = ("auto", "keras", "tflite")
UNLABELLED = "unlabelled"  # the one 'label' of images to predict, for ingestion's checks
# Stands in for a missing patient id during validation: duplicates among id-less files are
# then plain duplicates (the first is kept). The regex group [A-Za-z0-9]+ never yields '<'.
_NO_PATIENT = "<no patient id>"
DERMIS = MASK_CLASSES["dermis"]

Predictor = Callable[[np.ndarray], np.ndarray]


# --- a TFLite model file ---------------------------------------------------------------------

# --- export: convert, compare, choose --------------------------------------------------------

@dataclass
class ExportResult:
    """The converted models and what was measured about them (JSON-able `summary`)."""

    float32: bytes
    int8: bytes | Skipped
    summary: dict[str, Any] = field(default_factory=dict)


def export_classifier(model: keras.Model, representative: np.ndarray, check: np.ndarray,
                      timing: np.ndarray, *, agreement_threshold: float, rounds: int = 5,
                      num_threads: int = 2, batch_size: int = 8,
                      int8_enabled: bool = True) -> ExportResult:
    """Convert to TFLite float32 and int8; agreement on `check`, speed on `timing` patches.

    An int8 conversion that fails (an op without an int8 kernel) is recorded, not fatal: the
    screening tool needs one fast runtime, and float32 is the candidate.
    """
    started = time.perf_counter()
    float32 = export.to_tflite(model)
    int8: bytes | Skipped = Skipped("int8 export disabled (export.int8: false)")
    if int8_enabled:
        try:
            int8 = export.to_tflite(model, representative, "int8")
        except Exception as error:  # converter errors have no common base class
            logger.warning("int8 conversion failed (%s: %s); only float32 is exported",
                           type(error).__name__, error)
            int8 = Skipped(f"int8 conversion failed: {type(error).__name__}: {error}")
    convert_seconds = time.perf_counter() - started
    predictors: dict[str, Predictor] = {KERAS: export.keras_predictor(model)}
    sizes = {KERAS: keras_file_bytes(model), FLOAT32: len(float32)}
    predictors[FLOAT32] = export.TFLiteClassifier(float32, num_threads, batch_size).predict
    if not isinstance(int8, Skipped):
        predictors[INT8] = export.TFLiteClassifier(int8, num_threads, batch_size).predict
        sizes[INT8] = len(int8)
    outputs = {name: predict(check) for name, predict in predictors.items()}
    speed = interleaved_latency(predictors, timing, rounds)
    runtimes = {name: {"model_bytes": sizes[name], **speed[name],
                       **({} if name == KERAS else export.agreement(outputs[KERAS], outputs[name]))}
                for name in predictors}
    runtime, reason = choose_runtime(runtimes, agreement_threshold)
    summary = {"runtimes": runtimes, "runtime": runtime, "runtime_reason": reason,
               "agreement_threshold": agreement_threshold, "agreement_patches": len(check),
               "representative_patches": len(representative), "latency_patches": len(timing),
               "latency_rounds": rounds, "convert_seconds": convert_seconds,
               "int8_skipped": int8.reason if isinstance(int8, Skipped) else None}
    return ExportResult(float32, int8, summary)


def keras_file_bytes(model: keras.Model) -> int:
    """Size of the model as a `.keras` file, the artifact TFLite is compared with."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        return path.stat().st_size


def interleaved_latency(predictors: Mapping[str, Predictor], patches: np.ndarray,
                        rounds: int) -> dict[str, dict[str, float]]:
    """Median time per runtime; runtimes take turns each round, so load from other processes
    on a shared machine hits them alike (as `export.compare_runtimes` does)."""
    for predict in predictors.values():
        predict(patches)  # warm-up: tracing, tensor allocation, XNNPACK weight packing
    seconds: dict[str, list[float]] = {name: [] for name in predictors}
    for _ in range(max(1, rounds)):
        for name, predict in predictors.items():
            seconds[name].append(
                export.latency(predict, patches, repeats=1, warmup=0)["seconds_median"])
    result = {}
    for name, values in seconds.items():
        median = float(np.median(values))
        result[name] = {"patches_per_second": len(patches) / median,
                        "ms_per_patch": 1000.0 * median / len(patches)}
    return result


def choose_runtime(runtimes: Mapping[str, Mapping[str, float]],
                   agreement_threshold: float) -> tuple[str, str]:
    """TFLite float32 when it says the same as Keras (label agreement >= threshold) and is
    faster; Keras otherwise. int8 is never chosen by itself: its gain is size, not speed, and
    its rounding flips borderline patches."""
    candidate, keras_row = runtimes.get(FLOAT32), runtimes[KERAS]
    if candidate is None:
        return KERAS, "no float32 TFLite model"
    agreement = candidate.get("label_agreement", float("nan"))
    if not agreement >= agreement_threshold:  # NaN (no patches to check) fails too
        return KERAS, (f"float32 label agreement {agreement:.3f} is below "
                       f"{agreement_threshold:.3f}")
    speedup = candidate["patches_per_second"] / keras_row["patches_per_second"]
    if speedup <= 1.0:
        return KERAS, f"float32 TFLite is not faster ({speedup:.2f}x Keras)"
    return FLOAT32, (f"float32 TFLite agrees on {agreement:.1%} of labels and runs "
                     f"{speedup:.2f}x Keras")


def export_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """Flat numbers for MLflow: `<runtime>.<measure>` plus `uses_tflite` (1 = float32 chosen)."""
    metrics = {f"{runtime}.{key}": float(value)
               for runtime, row in summary["runtimes"].items() for key, value in row.items()
               if isinstance(value, int | float) and np.isfinite(value)}
    metrics["uses_tflite"] = float(summary["runtime"] == FLOAT32)
    metrics["convert_seconds"] = float(summary["convert_seconds"])
    return metrics


def split_patches(patches: np.ndarray, patch_index: pd.DataFrame, splits: Sequence[str],
                  n: int | None, input_size: int, seed: int = 0) -> np.ndarray:
    """Up to `n` patches (seeded, label-stratified) of the first of `splits` that has any,
    resized to the model input."""
    for split in splits:
        part = patch_index[patch_index["split"] == split]
        if len(part):
            rows = training.subsample(part, n, seed)["row"].to_numpy()
            return tiling.resize_batch(patches[rows], input_size)
    return np.zeros((0, input_size, input_size, 3), np.uint8)


# --- prediction: which files --------------------------------------------------------------

def discover_inputs(path: str | Path, patient_id_regex: str | None, *,
                    patient_from: str = "filename", allow_outside_root: bool = False
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
        records = ingest.discover_folder(source, regex, patient_from=patient_from,
                                         allow_outside_root=allow_outside_root,
                                         label_folders=False)
        optional = records["problem_check"].isin(["no_label_folder", "no_patient_id"])
        records.loc[optional, ["problem_check", "problem"]] = None
    elif source.is_file():
        name = ingest.display_text(source.name)
        match = ingest.compile_patient_regex(regex).search(name)
        record = dict.fromkeys(ingest.RECORD_COLUMNS)
        record.update(image_path=str(source), relative_path=name,
                      patient_id=match.group("patient") if match and patient_from != "folder"
                      else None)
        if source.suffix.lower() not in ingest.IMAGE_EXTENSIONS:
            record.update(problem_check="not_image_extension",
                          problem="not an image extension "
                                  f"({ingest.display_text(source.suffix) or 'none'})")
        records = pd.DataFrame([record], columns=ingest.RECORD_COLUMNS)
    else:
        raise ValueError("predict.input is neither a folder nor a file "
                         f"({ingest.display_text(source.name)})")
    if patient_id_regex is None:
        records["patient_id"] = None
    return records.assign(raw_label=UNLABELLED)


def validate_inputs(records: pd.DataFrame, *, min_side: int, min_tissue_fraction: float,
                    min_saturation: int = 12, tiff_page: int = 0
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cohort's checks on images without labels: (valid images, quarantine table).

    Decoding, size, tissue and duplicate checks are ingestion's own; all images carry one
    stand-in label, and images without a patient id one stand-in patient, so that the
    label and patient checks pass and a repeated image is reported as a duplicate.
    """
    records = records.copy()
    records["patient_id"] = records["patient_id"].where(records["patient_id"].notna(),
                                                        _NO_PATIENT)
    valid, quarantine = ingest.validate_cohort(
        records, label_map={}, allowed_labels=(UNLABELLED,), min_side=min_side,
        min_tissue_fraction=min_tissue_fraction, min_saturation=min_saturation,
        tiff_page=tiff_page)
    valid["patient_id"] = valid["patient_id"].where(valid["patient_id"] != _NO_PATIENT, None)
    return valid, quarantine


# --- prediction: one image -----------------------------------------------------------------

@dataclass(frozen=True)
class PatchSettings:
    """Training's patching and gating, repeated for new images."""

    patch_size: int
    stride: int
    min_tissue_fraction: float
    min_saturation: int
    unet_input_size: int
    use_segmentation: bool
    min_dermis_fraction: float

    @classmethod
    def from_params(cls, patches: Mapping[str, Any], segmentation: Mapping[str, Any]
                    ) -> PatchSettings:
        selection = segmentation["selection"]
        return cls(patches["patch_size"], patches["stride"], patches["min_tissue_fraction"],
                   patches.get("min_saturation", 12), segmentation["unet"]["input_size"],
                   bool(selection["use_segmentation"]), selection["min_dermis_fraction"])


@dataclass
class ImagePatches:
    """An image's tissue patches (stain-normalised, patch_size) and which ones are classified."""

    patches: np.ndarray
    tiles: list[tiling.Tile]
    used: np.ndarray  # boolean, per patch: passed UNet gating (or all, on fallback)
    gating_fallback: bool  # no patch passed gating: every tissue patch is used, and flagged

    @property
    def used_patches(self) -> np.ndarray:
        return self.patches[self.used]

    @property
    def used_tiles(self) -> list[tiling.Tile]:
        return [t for t, keep in zip(self.tiles, self.used, strict=True) if keep]


def image_patches(image: np.ndarray, normalise: Callable[[np.ndarray], np.ndarray],
                  unet: Predictor | None, settings: PatchSettings) -> ImagePatches:
    """Tissue on the raw image, tiles cut from the normalised one, UNet gating: the order
    the `patches` and `segmentation` pipelines use."""
    size = settings.patch_size
    tissue = tissue_mask(image, settings.min_saturation)
    tiles = tiling.grid_tiles(tissue, size, settings.stride, settings.min_tissue_fraction)
    if not tiles:
        return ImagePatches(np.zeros((0, size, size, 3), np.uint8), [], np.zeros(0, bool), False)
    normalised = normalise(image)
    patches = np.stack([tiling.crop(normalised, t, size) for t in tiles])
    if not settings.use_segmentation or unet is None:
        return ImagePatches(patches, tiles, np.ones(len(tiles), bool), False)
    masks = unet(tiling.resize_batch(patches, settings.unet_input_size)).argmax(axis=-1)
    used = (masks == DERMIS).mean(axis=(1, 2)) >= settings.min_dermis_fraction
    if not used.any():
        return ImagePatches(patches, tiles, np.ones(len(tiles), bool), True)
    return ImagePatches(patches, tiles, used, False)


# --- prediction: the models ------------------------------------------------------------------

@dataclass
class TaskModel:
    """One task's classifier as predict runs it."""

    task: str
    architecture: str
    class_names: tuple[str, ...]
    input_size: int
    runtime: str
    keras_path: Path
    predict: Predictor

    def probabilities(self, patches: np.ndarray) -> np.ndarray:
        if len(patches) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        return self.predict(tiling.resize_batch(patches, self.input_size))


def model_paths(templates: Mapping[str, str], task: str, architecture: str) -> dict[str, Path]:
    return {kind: Path(template.format(task=task, arch=architecture))
            for kind, template in templates.items()}


def resolve_runtime(requested: str, export_summary: Path) -> str:
    """`auto`: what the export chose for this model (Keras when it was not exported)."""
    if requested not in RUNTIME_CHOICES:
        raise ValueError(f"predict.runtime must be one of {', '.join(RUNTIME_CHOICES)}; "
                         f"got {requested!r}")
    if requested == "tflite":
        return FLOAT32
    if requested == KERAS or not export_summary.is_file():
        return KERAS
    return json.loads(export_summary.read_text()).get("runtime", KERAS)


def load_task_model(task: Mapping[str, Any], architecture: Mapping[str, Any], runtime: str,
                    templates: Mapping[str, str], num_threads: int = 2) -> TaskModel | Skipped:
    """The trained classifier of one task, on the runtime asked for (or chosen by export)."""
    paths = model_paths(templates, task["name"], architecture["name"])
    marker = paths["keras"].with_suffix(".skipped.json")
    if marker.exists():
        return Skipped(json.loads(marker.read_text())["reason"])
    chosen = resolve_runtime(runtime, paths["export_summary"])
    path = paths["tflite"] if chosen == FLOAT32 else paths["keras"]
    if not path.is_file():
        hint = ("export runs for MobileNetV2 only; use predict.runtime: keras"
                if chosen == FLOAT32 else "run `kedro run` first to train it")
        raise FileNotFoundError(f"no {chosen} model for {task['name']}.{architecture['name']} "
                                f"at {path} ({hint})")
    return TaskModel(task["name"], architecture["name"], tuple(task["classes"]),
                     architecture["input_size"], chosen, paths["keras"],
                     serving.load_classifier(path, num_threads))


# --- prediction: the table -------------------------------------------------------------------

def predict_images(images: pd.DataFrame, models: Sequence[TaskModel],
                   normalizer: Mapping[str, Any], unet: keras.Model | None,
                   settings: PatchSettings, low_confidence_threshold: float,
                   tiff_page: int = 0) -> pd.DataFrame:
    """One row per image and task: mean patch probabilities, label, counts and flags.

    `images` needs `image_path`, `image` and `patient` (pseudonyms); only pseudonyms come out.
    Patches are cut once per image and shared by every task's model.
    """
    normalise = stain.StainNormalizer.from_dict(normalizer).transform
    unet_predict = export.keras_predictor(unet, 64) if unet is not None else None
    rows, start = [], time.perf_counter()
    for done, record in enumerate(images.itertuples(index=False), start=1):
        image, _ = ingest.read_rgb(record.image_path, tiff_page)
        found = image_patches(image, normalise, unet_predict, settings)
        for model in models:
            probabilities = model.probabilities(found.used_patches)
            summary = serving.summarise(probabilities, model.class_names,
                                        low_confidence_threshold)
            rows.append({"level": "image", "image": record.image, "patient": record.patient,
                         "task": model.task, "architecture": model.architecture,
                         "runtime": model.runtime, **summary,
                         "n_tissue_patches": len(found.tiles), "n_images": 1,
                         "gating_fallback": found.gating_fallback})
        if done % max(1, len(images) // 10) == 0 or done == len(images):
            logger.info("Predict: %d/%d images (%.2f images/s)", done, len(images),
                        done / max(time.perf_counter() - start, 1e-9))
    return order_columns(pd.DataFrame(rows), models)


def patient_means(image_rows: pd.DataFrame, models: Sequence[TaskModel],
                  low_confidence_threshold: float) -> pd.DataFrame:
    """Per patient and task: the mean of its images' probabilities (images with patches only).

    Images without a patient id have no patient row.
    """
    rows = []
    known = image_rows[image_rows["patient"].notna()] if len(image_rows) else image_rows
    for model in models:
        columns = [f"probability_{c}" for c in model.class_names]
        of_task = known[known["task"] == model.task]
        for patient, part in of_task.groupby("patient", sort=True):
            with_patches = part[part["n_patches"] > 0]
            summary = serving.summarise(with_patches[columns].to_numpy(), model.class_names,
                                        low_confidence_threshold)
            rows.append({"level": "patient", "image": None, "patient": patient,
                         "task": model.task, "architecture": model.architecture,
                         "runtime": model.runtime, **summary,
                         "n_patches": int(part["n_patches"].sum()),
                         "n_tissue_patches": int(part["n_tissue_patches"].sum()),
                         "n_images": len(part),
                         "gating_fallback": bool(part["gating_fallback"].any())})
    return order_columns(pd.DataFrame(rows), models)


def order_columns(table: pd.DataFrame, models: Sequence[TaskModel]) -> pd.DataFrame:
    """A fixed column order; every task's probability columns (NaN where not its class)."""
    classes = list(dict.fromkeys(c for m in models for c in m.class_names))
    columns = ["level", "image", "patient", "task", "architecture", "runtime", "label",
               *(f"probability_{c}" for c in classes), "n_patches", "n_tissue_patches",
               "n_images", "gating_fallback", "low_confidence"]
    return table.reindex(columns=columns)


# --- prediction: Grad-CAM ----------------------------------------------------------------------

def gradcam_heatmap(model: keras.Model, found: ImagePatches, image_shape: tuple[int, ...],
                    input_size: int, class_index: int) -> np.ndarray:
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
        heat[tile.y:tile.y + size, tile.x:tile.x + size] = (
            tiling.resize_batch(cam[None], size)[0] * weight)
    return heat / max(float(heat.max()), 1e-6)
