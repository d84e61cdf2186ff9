"""Export classifiers to TFLite (LiteRT) and run them with the LiteRT interpreter.

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
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

logger = logging.getLogger(__name__)

QUANTIZATIONS = ("float32", "int8")


def to_tflite(model: keras.Model, representative: np.ndarray | None = None,
              quantize: str = "float32") -> bytes:
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
            "serve", lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)])
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
    (batch 32 at 224 px spills activations out of cache). Only a short last batch resizes the
    input tensor, and the interpreter keeps its size for the next call. A lock makes one
    instance safe to share between server threads (the interpreter itself is not).
    """

    def __init__(self, model_bytes: bytes, num_threads: int = 2, batch_size: int = 8) -> None:
        self._interpreter = _interpreter_class()(model_content=model_bytes,
                                                 num_threads=num_threads)
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
            chunks = [self._run(patches[i:i + self.batch_size])
                      for i in range(0, len(patches), self.batch_size)]
        return np.concatenate(chunks)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) != self._batch:
            self._interpreter.resize_tensor_input(self._input["index"],
                                                  [len(batch), *self.input_shape])
            self._interpreter.allocate_tensors()
            self._batch = len(batch)
        self._interpreter.set_tensor(self._input["index"], _quantize(batch, self._input))
        self._interpreter.invoke()
        return _dequantize(self._interpreter.get_tensor(self._output["index"]), self._output)


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
        return np.concatenate([
            np.asarray(model.predict_on_batch(patches[i:i + batch_size].astype(np.float32)))
            for i in range(0, len(patches), batch_size)])
    return predict


def agreement(reference_probs: np.ndarray, candidate_probs: np.ndarray) -> dict[str, float]:
    """How far a converted model's probabilities are from the reference model's."""
    if reference_probs.shape != candidate_probs.shape:
        raise ValueError(f"shapes differ: {reference_probs.shape} vs {candidate_probs.shape}")
    if len(reference_probs) == 0:
        return {"label_agreement": float("nan"), "max_abs_probability_difference": float("nan"),
                "n": 0}
    same = np.argmax(reference_probs, axis=1) == np.argmax(candidate_probs, axis=1)
    diff = np.abs(reference_probs.astype(np.float64) - candidate_probs.astype(np.float64))
    return {"label_agreement": float(same.mean()),
            "max_abs_probability_difference": float(diff.max()),
            "n": len(reference_probs)}


def latency(predict_fn: Callable[[np.ndarray], Any], patches: np.ndarray,
            repeats: int = 5, warmup: int = 1) -> dict[str, float]:
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
    return {"ms_per_patch": 1000.0 * median / len(patches),
            "patches_per_second": len(patches) / median,
            "seconds_median": median, "n_patches": len(patches), "repeats": repeats}


def compare_runtimes(model: keras.Model, patches: np.ndarray, representative: np.ndarray,
                     rounds: int = 5, num_threads: int = 2,
                     batch_size: int = 8) -> list[dict[str, Any]]:
    """Keras vs TFLite float32 vs TFLite int8 on the same patches: speed and agreement.

    Runtimes take turns within each round, so load from other processes on a shared machine
    hits all of them alike; each runtime's figure is its median round.
    """
    runtimes: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "keras": keras_predictor(model)}
    sizes: dict[str, int | None] = {"keras": None}
    for quantize in QUANTIZATIONS:
        model_bytes = to_tflite(model, representative, quantize)
        runtimes[f"tflite_{quantize}"] = TFLiteClassifier(model_bytes, num_threads,
                                                          batch_size).predict
        sizes[f"tflite_{quantize}"] = len(model_bytes)
    outputs = {name: predict(patches) for name, predict in runtimes.items()}  # also warms up
    seconds: dict[str, list[float]] = {name: [] for name in runtimes}
    for _ in range(rounds):
        for name, predict in runtimes.items():
            seconds[name].append(latency(predict, patches, repeats=1, warmup=0)["seconds_median"])
    rows = []
    for name in runtimes:
        median = float(np.median(seconds[name]))
        rows.append({"runtime": name, "patches_per_second": len(patches) / median,
                     "ms_per_patch": 1000.0 * median / len(patches),
                     **agreement(outputs["keras"], outputs[name]), "model_bytes": sizes[name]})
    for row in rows:
        row["speedup_vs_keras"] = row["patches_per_second"] / rows[0]["patches_per_second"]
    return rows
