"""The per-image work of `predict` and of patch cutting, as functions a Dask worker can run.

`image_rows` is the body of `predict`'s loop, the same call in the driver (sequential) and on
a worker. A worker gets `PredictWork`, plain values and TFLite bytes only, and rebuilds the
preprocessor and interpreters once per process (`distributed.worker_cached`, keyed by a
digest computed in the driver). This module imports neither TensorFlow nor Kedro, so a worker
process starts in about a second.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ssc_skin import distributed
from ssc_skin.cohort import ingest
from ssc_skin.constants import Skipped
from ssc_skin.imaging import tiling
from ssc_skin.inference import export, serving
from ssc_skin.preprocessing.preprocess import PreprocessConfig, Preprocessor


class Classifier(Protocol):
    """What `image_rows` needs of a task model (`predict.TaskModel` or a worker's copy)."""

    task: str
    architecture: str
    runtime: str
    class_names: tuple[str, ...]

    def probabilities(self, patches: np.ndarray) -> np.ndarray: ...


def image_rows(
    record: Mapping[str, Any],
    models: Sequence[Classifier],
    preprocessor: Preprocessor,
    low_confidence_threshold: float,
    tiff_page: int = 0,
) -> list[dict[str, Any]]:
    """One image (`image_path`, pseudonyms `image` and `patient`) -> one row per task; the
    patches are cut once and shared by every task's model."""
    image, _ = ingest.read_rgb(record["image_path"], tiff_page)
    found = preprocessor(image)
    rows = []
    for model in models:
        probabilities = model.probabilities(found.used_patches)
        summary = serving.summarise(
            probabilities, model.class_names, low_confidence_threshold, found.selection
        )
        rows.append(
            {
                "level": "image",
                "image": record["image"],
                "patient": record["patient"],
                "task": model.task,
                "architecture": model.architecture,
                "runtime": model.runtime,
                **summary,
                "n_tissue_patches": found.n_tissue_tiles,
                "n_images": 1,
            }
        )
    return rows


# --- predict on a worker -----------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierBytes:
    """One task's TFLite classifier by value."""

    task: str
    architecture: str
    class_names: tuple[str, ...]
    input_size: int
    runtime: str
    tflite: bytes


@dataclass(frozen=True)
class PredictWork:
    """Everything a worker needs for `image_rows`, picklable (no interpreter, no dataset)."""

    key: str  # digest of the bytes and settings below: the worker's cache key
    preprocess_config: dict[str, Any]
    unet_tflite: bytes
    classifiers: tuple[ClassifierBytes, ...]
    low_confidence_threshold: float
    tiff_page: int = 0
    num_threads: int = 1


@dataclass
class _WorkerClassifier:
    task: str
    architecture: str
    runtime: str
    class_names: tuple[str, ...]
    input_size: int
    predict: export.Predictor

    def probabilities(self, patches: np.ndarray) -> np.ndarray:
        """As `predict.TaskModel.probabilities`: resize to the input, then classify."""
        if len(patches) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        return self.predict(tiling.resize_batch(patches, self.input_size))


def predict_work(
    models: Sequence[Any],
    tflite: Mapping[str, Any],
    preprocess_config: Mapping[str, Any],
    unet_tflite: bytes,
    low_confidence_threshold: float,
    tiff_page: int = 0,
    num_threads: int = 1,
) -> PredictWork | Skipped:
    """The work of `predict` by value, or why it must stay in the driver.

    `models` are `predict.TaskModel`s; `tflite` maps `<task>.<arch>` to an object with a
    `tflite()` loader of its float32 flatbuffer (`predict.TrainedModel`). A Keras model is
    not sent to workers (it would mean pickling TensorFlow state and importing TensorFlow
    in each worker): a run with any Keras task stays sequential.
    """
    keras_tasks = [m.task for m in models if m.runtime != export.FLOAT32]
    if keras_tasks:
        return Skipped(
            f"task(s) {', '.join(keras_tasks)} run on Keras, which is not sent to "
            "workers (only TFLite bytes are); set predict.runtime: tflite to "
            "distribute them"
        )
    classifiers = tuple(
        ClassifierBytes(
            m.task,
            m.architecture,
            tuple(m.class_names),
            int(m.input_size),
            m.runtime,
            tflite[f"{m.task}.{m.architecture}"].tflite(),
        )
        for m in models
    )
    config = dict(preprocess_config)
    settings = json.dumps(
        [
            config,
            float(low_confidence_threshold),
            int(tiff_page),
            int(num_threads),
            [(c.task, c.architecture, c.class_names, c.input_size) for c in classifiers],
        ],
        sort_keys=True,
        default=str,
    )
    key = distributed.digest(settings, unet_tflite, *(c.tflite for c in classifiers))
    return PredictWork(
        key,
        config,
        unet_tflite,
        classifiers,
        float(low_confidence_threshold),
        int(tiff_page),
        int(num_threads),
    )


def _build_predict(work: PredictWork) -> tuple[list[_WorkerClassifier], Preprocessor]:
    unet = export.tflite_segmenter(work.unet_tflite)  # its own thread count, as the node
    preprocessor = Preprocessor(PreprocessConfig.from_dict(work.preprocess_config), unet)
    models = [
        _WorkerClassifier(
            c.task,
            c.architecture,
            c.runtime,
            c.class_names,
            c.input_size,
            export.TFLiteClassifier(c.tflite, work.num_threads).predict,
        )
        for c in work.classifiers
    ]
    return models, preprocessor


def predict_image_on_worker(record: Mapping[str, Any], work: PredictWork) -> list[dict[str, Any]]:
    """`image_rows` with interpreters built once per worker process from `work`'s bytes."""
    models, preprocessor = distributed.worker_cached(work.key, lambda: _build_predict(work))
    return image_rows(record, models, preprocessor, work.low_confidence_threshold, work.tiff_page)
