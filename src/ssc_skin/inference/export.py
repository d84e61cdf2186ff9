"""Export models to TFLite (LiteRT), run them with the LiteRT interpreter, choose the runtime.

A trained classifier becomes TFLite float32 and int8; both are checked against the Keras model
on held-out patches and timed beside it, and the faster runtime that still says the same
(label agreement above a threshold) is recorded as the one to predict with.

A MobileNetV2 served on a CPU spends its time in convolutions; TFLite's XNNPACK kernels run
them faster than a Keras call on two cores, and int8 quantisation shrinks the model four-fold.
`agreement` and `latency` tell whether the faster model still says the same.
TensorFlow is imported only to convert: serving a `.tflite` file needs numpy and
`ai-edge-litert` alone.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ssc_skin.constants import Skipped
from ssc_skin.imaging import tiling

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

logger = logging.getLogger(__name__)

QUANTIZATIONS = ("float32", "int8")
KERAS, FLOAT32, INT8 = "keras", "tflite_float32", "tflite_int8"

Predictor = Callable[[np.ndarray], np.ndarray]


def to_tflite(
    model: keras.Model, representative: np.ndarray | None = None, quantize: str = "float32"
) -> bytes:
    """Convert a Keras 3 model to a TFLite flatbuffer (batch dimension left dynamic).

    Goes through a SavedModel written by `keras.export.ExportArchive`, as Keras' own LiteRT
    export does: `from_concrete_functions` on a traced Keras 3 call loses the weights (the
    model then outputs NaN), and `from_keras_model` prints the whole signature to stdout.

    `quantize="int8"`: full-integer quantisation of weights and activations, calibrated on
    `representative` (uint8-range RGB patches, N x H x W x 3; ~100 training patches). The
    input stays uint8 (what an image already is: the scale is 1, so no rounding) and the
    output float32 probabilities. On this project's AVX2 CPUs (no VNNI) int8 runs about as
    fast as float32 under XNNPACK: its gain is size, not speed.
    """
    import keras  # noqa: PLC0415 - serving a .tflite model must not need TensorFlow
    import tensorflow as tf  # noqa: PLC0415

    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    if quantize == "int8" and (representative is None or len(representative) == 0):
        raise ValueError("int8 quantisation needs a representative set of patches")
    with tempfile.TemporaryDirectory() as saved_model_dir:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve",
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)],
        )
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        if quantize == "int8":
            _configure_int8(converter, representative)
        return converter.convert()


def _configure_int8(converter: tf.lite.TFLiteConverter, representative: np.ndarray) -> None:
    import tensorflow as tf  # noqa: PLC0415

    def samples() -> Iterator[list[np.ndarray]]:
        for patch in representative:
            yield [patch[None].astype(np.float32)]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    # Builtins-int8 only: conversion fails loudly instead of leaving float ops behind.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.float32


def representative_sample(patches: np.ndarray, n: int = 100, seed: int = 0) -> np.ndarray:
    """A seeded random subset of training patches for int8 calibration.

    Calibration fixes each activation's range; ~100 patches cover the stain variation
    without making conversion slow (each sample is one interpreter run).
    """
    if len(patches) <= n:
        return patches
    index = np.random.default_rng(seed).choice(len(patches), n, replace=False)
    return patches[np.sort(index)]


class TFLiteClassifier:
    """A TFLite classifier on the LiteRT interpreter (XNNPACK), with Keras-like `predict`.

    Patches run in batches of 8: on 2 AVX2 cores that was as fast as or faster than 1 or 32
    (batch 32 at 224 px spills activations out of cache). The input tensor keeps that one
    size (a short last batch is padded), so it is allocated once. A lock makes one
    instance safe to share between server threads (the interpreter itself is not).
    """

    def __init__(self, model_bytes: bytes, num_threads: int = 2, batch_size: int = 8) -> None:
        self._interpreter = _interpreter_class()(model_content=model_bytes, num_threads=num_threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self._batch = int(self._input["shape"][0])
        self.batch_size = batch_size
        self._lock = threading.Lock()

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(height, width, channels) the model takes."""
        return tuple(int(d) for d in self._input["shape"][1:])

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self._input["dtype"])

    def predict(self, patches: np.ndarray) -> np.ndarray:
        """Class probabilities (N x classes) for uint8-range RGB patches (N x H x W x 3)."""
        n_classes = int(self._output["shape"][-1])
        if len(patches) == 0:
            return np.zeros((0, n_classes), np.float32)
        with self._lock:
            chunks = [
                self._run(patches[i : i + self.batch_size])
                for i in range(0, len(patches), self.batch_size)
            ]
        return np.concatenate(chunks)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One fixed-size batch: a short last batch is padded with zeros, so the interpreter
        never reallocates its tensors (each image has another number of patches, and
        reallocating cost more than the padded samples)."""
        n = len(batch)
        if self._batch != self.batch_size:
            self._interpreter.resize_tensor_input(
                self._input["index"], [self.batch_size, *self.input_shape]
            )
            self._interpreter.allocate_tensors()
            self._batch = self.batch_size
        if n < self.batch_size:
            batch = np.concatenate(
                [batch, np.zeros((self.batch_size - n, *batch.shape[1:]), batch.dtype)]
            )
        self._interpreter.set_tensor(self._input["index"], _quantize(batch, self._input))
        self._interpreter.invoke()
        out = self._interpreter.get_tensor(self._output["index"])[:n]
        return _dequantize(out, self._output)


UNET_BATCH_SIZE = 16  # the UNet sees small (coarse) patches: 16 a call, a few calls an image
# One thread: for a model this small (int8, 32 px) a second thread cost more in hand-overs
# than it gained on 2 cores (measured: int8 4.7-5.0 ms per 44 patches on 1 thread, 5.8-10.7
# on 2), and the other core is left to the classifier or the next image.
UNET_THREADS = 1


def tflite_segmenter(model_bytes: bytes, num_threads: int = UNET_THREADS) -> Predictor:
    """The exported gating UNet as a function: patches in, per-pixel class scores out. The
    one way training, `predict` and serving run it."""
    return TFLiteClassifier(model_bytes, num_threads, UNET_BATCH_SIZE).predict


def _interpreter_class() -> type:
    """LiteRT's interpreter; TensorFlow's deprecated copy where LiteRT has no wheel (Linux
    aarch64), so the project still runs there, only without TensorFlow-free serving."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415
    except ImportError:
        logger.warning("ai-edge-litert is not installed; using tf.lite.Interpreter")
        import tensorflow as tf  # noqa: PLC0415

        return tf.lite.Interpreter
    return Interpreter


def _quantize(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Map real values onto a tensor's integer grid (identity scale for uint8 pixels)."""
    dtype = np.dtype(detail["dtype"])
    if not np.issubdtype(dtype, np.integer):
        return values.astype(dtype, copy=False)
    scale, zero_point = detail["quantization"]
    if scale == 1.0 and zero_point == 0 and values.dtype == dtype:
        return values
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if not np.issubdtype(values.dtype, np.integer):
        return values.astype(np.float32, copy=True)
    scale, zero_point = detail["quantization"]
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def keras_predictor(model: keras.Model, batch_size: int = 32) -> Callable[[np.ndarray], np.ndarray]:
    """Keras inference as one compiled graph call per batch (`predict_on_batch`).

    `model.predict` adds a tf.data pipeline and callbacks per call; for the few dozen patches
    of one image `predict_on_batch` is the fair Keras baseline.
    """

    def predict(patches: np.ndarray) -> np.ndarray:
        if len(patches) == 0:
            return np.zeros((0, *model.output_shape[1:]), np.float32)
        return np.concatenate(
            [
                np.asarray(model.predict_on_batch(patches[i : i + batch_size].astype(np.float32)))
                for i in range(0, len(patches), batch_size)
            ]
        )

    return predict


def agreement(reference_probs: np.ndarray, candidate_probs: np.ndarray) -> dict[str, float]:
    """How far a converted model's probabilities are from the reference model's."""
    if reference_probs.shape != candidate_probs.shape:
        raise ValueError(f"shapes differ: {reference_probs.shape} vs {candidate_probs.shape}")
    if len(reference_probs) == 0:
        return {
            "label_agreement": float("nan"),
            "max_abs_probability_difference": float("nan"),
            "n": 0,
        }
    same = np.argmax(reference_probs, axis=1) == np.argmax(candidate_probs, axis=1)
    diff = np.abs(reference_probs.astype(np.float64) - candidate_probs.astype(np.float64))
    return {
        "label_agreement": float(same.mean()),
        "max_abs_probability_difference": float(diff.max()),
        "n": len(reference_probs),
    }


def latency(
    predict_fn: Callable[[np.ndarray], Any], patches: np.ndarray, repeats: int = 5, warmup: int = 1
) -> dict[str, float]:
    """Median wall time of `predict_fn(patches)` over `repeats` runs, after `warmup` runs.

    Warm-up runs pay for graph tracing, tensor allocation and XNNPACK packing of weights,
    which a long-running server pays once; the median ignores a stray slow run on a shared
    machine.
    """
    if len(patches) == 0 or repeats < 1:
        raise ValueError("latency needs at least one patch and one repeat")
    for _ in range(warmup):
        predict_fn(patches)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict_fn(patches)
        seconds.append(time.perf_counter() - start)
    median = float(np.median(seconds))
    return {
        "ms_per_patch": 1000.0 * median / len(patches),
        "patches_per_second": len(patches) / median,
        "seconds_median": median,
        "n_patches": len(patches),
        "repeats": repeats,
    }


def compare_runtimes(
    model: keras.Model,
    patches: np.ndarray,
    representative: np.ndarray,
    rounds: int = 5,
    num_threads: int = 2,
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """Keras vs TFLite float32 vs TFLite int8 on the same patches: speed and agreement."""
    runtimes: dict[str, Predictor] = {KERAS: keras_predictor(model)}
    sizes: dict[str, int | None] = {KERAS: None}
    for quantize in QUANTIZATIONS:
        model_bytes = to_tflite(model, representative, quantize)
        runtimes[f"tflite_{quantize}"] = TFLiteClassifier(
            model_bytes, num_threads, batch_size
        ).predict
        sizes[f"tflite_{quantize}"] = len(model_bytes)
    outputs = {name: predict(patches) for name, predict in runtimes.items()}
    speed = interleaved_latency(runtimes, patches, rounds)
    rows = [
        {
            "runtime": name,
            **speed[name],
            **agreement(outputs[KERAS], outputs[name]),
            "model_bytes": sizes[name],
        }
        for name in runtimes
    ]
    for row in rows:
        row["speedup_vs_keras"] = row["patches_per_second"] / rows[0]["patches_per_second"]
    return rows


# --- export: convert, compare, choose --------------------------------------------------------


@dataclass
class ExportResult:
    """The converted models and what was measured about them (JSON-able `summary`)."""

    float32: bytes
    int8: bytes | Skipped
    summary: dict[str, Any] = field(default_factory=dict)


def export_classifier(
    model: keras.Model,
    representative: np.ndarray,
    check: np.ndarray,
    timing: np.ndarray,
    *,
    agreement_threshold: float,
    rounds: int = 5,
    num_threads: int = 2,
    batch_size: int = 8,
    int8_enabled: bool = True,
) -> ExportResult:
    """Convert to TFLite float32 and int8; agreement on `check`, speed on `timing` patches.

    An int8 conversion that fails (an op without an int8 kernel) is recorded, not fatal: the
    screening tool needs one fast runtime, and float32 is the candidate.
    """
    started = time.perf_counter()
    float32 = to_tflite(model)
    int8: bytes | Skipped = Skipped("int8 export disabled (int8: false)")
    if int8_enabled:
        try:
            int8 = to_tflite(model, representative, "int8")
        except Exception as error:  # converter errors have no common base class
            logger.warning(
                "int8 conversion failed (%s: %s); only float32 is exported",
                type(error).__name__,
                error,
            )
            int8 = Skipped(f"int8 conversion failed: {type(error).__name__}: {error}")
    convert_seconds = time.perf_counter() - started
    predictors: dict[str, Predictor] = {KERAS: keras_predictor(model)}
    sizes = {KERAS: keras_file_bytes(model), FLOAT32: len(float32)}
    predictors[FLOAT32] = TFLiteClassifier(float32, num_threads, batch_size).predict
    if not isinstance(int8, Skipped):
        predictors[INT8] = TFLiteClassifier(int8, num_threads, batch_size).predict
        sizes[INT8] = len(int8)
    outputs = {name: predict(check) for name, predict in predictors.items()}
    speed = interleaved_latency(predictors, timing, rounds)
    runtimes = {
        name: {
            "model_bytes": sizes[name],
            **speed[name],
            **({} if name == KERAS else agreement(outputs[KERAS], outputs[name])),
        }
        for name in predictors
    }
    runtime, reason = choose_runtime(runtimes, agreement_threshold)
    summary = {
        "runtimes": runtimes,
        "runtime": runtime,
        "runtime_reason": reason,
        "agreement_threshold": agreement_threshold,
        "agreement_patches": len(check),
        "representative_patches": len(representative),
        "latency_patches": len(timing),
        "latency_rounds": rounds,
        "convert_seconds": convert_seconds,
        "int8_skipped": int8.reason if isinstance(int8, Skipped) else None,
    }
    return ExportResult(float32, int8, summary)


def keras_file_bytes(model: keras.Model) -> int:
    """Size of the model as a `.keras` file, the artifact TFLite is compared with."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        return path.stat().st_size


def interleaved_latency(
    predictors: Mapping[str, Predictor], patches: np.ndarray, rounds: int
) -> dict[str, dict[str, float]]:
    """Median time per runtime; runtimes take turns each round, so load from other processes
    on a shared machine hits them alike (as `compare_runtimes` does)."""
    for predict in predictors.values():
        predict(patches)  # warm-up: tracing, tensor allocation, XNNPACK weight packing
    seconds: dict[str, list[float]] = {name: [] for name in predictors}
    for _ in range(max(1, rounds)):
        for name, predict in predictors.items():
            seconds[name].append(latency(predict, patches, repeats=1, warmup=0)["seconds_median"])
    result = {}
    for name, values in seconds.items():
        median = float(np.median(values))
        result[name] = {
            "patches_per_second": len(patches) / median,
            "ms_per_patch": 1000.0 * median / len(patches),
        }
    return result


def choose_runtime(
    runtimes: Mapping[str, Mapping[str, float]], agreement_threshold: float
) -> tuple[str, str]:
    """TFLite float32 when it says the same as Keras (label agreement >= threshold) and is
    faster; Keras otherwise. int8 is never chosen by itself: its gain is size, not speed, and
    its rounding flips borderline patches."""
    candidate, keras_row = runtimes.get(FLOAT32), runtimes[KERAS]
    if candidate is None:
        return KERAS, "no float32 TFLite model"
    agreement = candidate.get("label_agreement", float("nan"))
    if not agreement >= agreement_threshold:  # NaN (no patches to check) fails too
        return KERAS, (
            f"float32 label agreement {agreement:.3f} is below {agreement_threshold:.3f}"
        )
    speedup = candidate["patches_per_second"] / keras_row["patches_per_second"]
    if speedup <= 1.0:
        return KERAS, f"float32 TFLite is not faster ({speedup:.2f}x Keras)"
    return FLOAT32, (
        f"float32 TFLite agrees on {agreement:.1%} of labels and runs {speedup:.2f}x Keras"
    )


def export_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """Flat numbers for MLflow: `<runtime>.<measure>` plus `uses_tflite` (1 = float32 chosen)."""
    metrics = {
        f"{runtime}.{key}": float(value)
        for runtime, row in summary["runtimes"].items()
        for key, value in row.items()
        if isinstance(value, int | float) and np.isfinite(value)
    }
    metrics["uses_tflite"] = float(summary["runtime"] == FLOAT32)
    metrics["convert_seconds"] = float(summary["convert_seconds"])
    return metrics


def split_patches(
    patches: np.ndarray,
    patch_index: pd.DataFrame,
    splits: Sequence[str],
    n: int | None,
    input_size: int,
    seed: int = 0,
) -> np.ndarray:
    """Up to `n` patches (seeded, label-stratified) of the first of `splits` that has any,
    resized to the model input."""
    from ssc_skin.models import training  # noqa: PLC0415 - serving a .tflite needs no TensorFlow

    for split in splits:
        part = patch_index[patch_index["split"] == split]
        if len(part):
            rows = training.subsample(part, n, seed)["row"].to_numpy()
            return tiling.resize_batch(patches[rows], input_size)
    return np.zeros((0, input_size, input_size, 3), np.uint8)
