"""Whole-image prediction as an MLflow pyfunc model, servable with `mlflow models serve`.

A client posts whole biopsy images (base64 PNG/JPEG); the model finds the tissue, tiles it
into patches the way training did, classifies every patch and averages the probabilities,
as the evaluation aggregates patches to images (`metrics.aggregate_probabilities`).
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from ssc_skin.imaging import tiling
from ssc_skin.imaging.tissue import tissue_mask

logger = logging.getLogger(__name__)

CLASSIFIER_ARTIFACT = "classifier"
NO_TISSUE = "no tissue"
_PACKAGE_DIR = Path(__file__).resolve().parent

Classifier = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class PredictorConfig:
    """What the served model must repeat from training: patching, tissue detection, classes."""

    class_names: tuple[str, ...]
    input_size: int  # the classifier's input (patches are resized to it)
    patch_size: int = 128  # pixels cut from the full-resolution image
    stride: int = 128
    min_tissue_fraction: float = 0.5
    min_saturation: int = 12
    kernel: int = 5
    low_confidence_threshold: float = 0.6  # max mean probability below it flags the image
    batch_size: int | None = None  # None: each runtime's fastest (Keras 32, TFLite 8)
    num_threads: int = 2

    def __post_init__(self) -> None:
        if len(self.class_names) < 2 or NO_TISSUE in self.class_names:
            raise ValueError(f"need >= 2 class names, none of them {NO_TISSUE!r}; "
                             f"got {self.class_names}")
        object.__setattr__(self, "class_names", tuple(self.class_names))


def output_columns(class_names: Sequence[str]) -> list[str]:
    return ["label", *(f"probability_{c}" for c in class_names), "n_patches", "low_confidence"]


def encode_image(image: np.ndarray, extension: str = ".png") -> str:
    """RGB uint8 array -> base64 text, as a REST client sends it."""
    ok, buffer = cv2.imencode(extension, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode image as {extension}")
    return base64.b64encode(buffer.tobytes()).decode("ascii")


def decode_image(value: str | bytes) -> np.ndarray:
    """Base64 PNG/JPEG (a data-URI prefix is allowed) or raw image bytes -> RGB uint8.

    Grey or RGBA images become RGB: the classifier was trained on three channels.
    """
    raw = value if isinstance(value, bytes) and _looks_like_image(value) else _b64(value)
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a decodable PNG/JPEG image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _looks_like_image(raw: bytes) -> bool:
    return raw.startswith((b"\x89PNG", b"\xff\xd8\xff"))


def _b64(value: str | bytes) -> bytes:
    text = value.decode("ascii") if isinstance(value, bytes) else str(value)
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"image is not valid base64: {error}") from error


def extract_patches(image: np.ndarray, config: PredictorConfig) -> np.ndarray:
    """Tissue patches on the training grid, resized to the classifier input (N x s x s x 3)."""
    mask = tissue_mask(image, config.min_saturation, config.kernel)
    tiles = tiling.grid_tiles(mask, config.patch_size, config.stride,
                               config.min_tissue_fraction)
    if not tiles:
        return np.zeros((0, config.input_size, config.input_size, 3), np.uint8)
    patches = np.stack([tiling.crop(image, t, config.patch_size) for t in tiles])
    return tiling.resize_batch(patches, config.input_size)


def summarise(probabilities: np.ndarray, class_names: Sequence[str],
              low_confidence_threshold: float) -> dict[str, Any]:
    """One output row: mean patch probability per class, its argmax and a confidence flag.

    No patches (no tissue found) gives label "no tissue", NaN probabilities and the flag set:
    there is nothing to screen, and a reviewer should look at the slide.
    """
    n = len(probabilities)
    mean = probabilities.mean(axis=0) if n else np.full(len(class_names), np.nan)
    row: dict[str, Any] = {"label": class_names[int(np.argmax(mean))] if n else NO_TISSUE}
    row.update({f"probability_{c}": float(p) for c, p in zip(class_names, mean, strict=True)})
    row["n_patches"] = n
    row["low_confidence"] = bool(not n or float(mean.max()) < low_confidence_threshold)
    return row


def predict_image(image: np.ndarray, classifier: Classifier,
                  config: PredictorConfig) -> dict[str, Any]:
    patches = extract_patches(image, config)
    probabilities = (classifier(patches) if len(patches)
                     else np.zeros((0, len(config.class_names)), np.float32))
    return summarise(probabilities, config.class_names, config.low_confidence_threshold)


def load_classifier(path: str | Path, num_threads: int = 2,
                    batch_size: int | None = None) -> Classifier:
    """A `.tflite` file runs on LiteRT, a `.keras` file on Keras; both take uint8-range RGB
    patches and return probabilities."""
    path = Path(path)
    if path.suffix == ".tflite":
        from ssc_skin.inference.export import TFLiteClassifier  # noqa: PLC0415 - keeps TF import lazy

        return TFLiteClassifier(path.read_bytes(), num_threads, batch_size or 8).predict
    if path.suffix == ".keras":
        import keras  # noqa: PLC0415

        from ssc_skin.inference.export import keras_predictor  # noqa: PLC0415

        model = keras.models.load_model(path, compile=False)
        return _locked(keras_predictor(model, batch_size or 32))
    raise ValueError(f"classifier must be a .keras or .tflite file, got {path.name}")


def _locked(fn: Classifier) -> Classifier:
    """Serialise calls: server threads sharing one Keras model would oversubscribe 2 cores."""
    lock = threading.Lock()

    def call(patches: np.ndarray) -> np.ndarray:
        with lock:
            return fn(patches)
    return call


class WholeImagePredictor(mlflow.pyfunc.PythonModel):
    """Whole-image SSc screening: base64 images in, one row of class probabilities out."""

    def __init__(self, config: PredictorConfig) -> None:
        self.config = config
        self._classifier: Classifier | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The loaded model is rebuilt from the artifact by `load_context`, never pickled.
        return {"config": self.config, "_classifier": None}

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self._classifier = load_classifier(context.artifacts[CLASSIFIER_ARTIFACT],
                                           self.config.num_threads, self.config.batch_size)

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        if self._classifier is None:
            raise MlflowException("classifier not loaded: load the model with mlflow.pyfunc")
        if "image" not in model_input.columns:
            raise MlflowException.invalid_parameter_value(
                f"input needs a column 'image' (base64 PNG/JPEG); got {list(model_input.columns)}")
        rows = []
        for i, value in enumerate(model_input["image"]):
            try:
                image = decode_image(value)
            except ValueError as error:
                raise MlflowException.invalid_parameter_value(f"row {i}: {error}") from error
            rows.append(predict_image(image, self._classifier, self.config))
        return pd.DataFrame(rows, columns=output_columns(self.config.class_names))


def example_image(config: PredictorConfig) -> np.ndarray:
    """A pink stained disc on white glass, big enough for a few patches: the input example."""
    side = 2 * config.patch_size
    image = np.full((side, side, 3), 245, np.uint8)
    cv2.circle(image, (side // 2, side // 2), int(side * 0.45), (200, 90, 160), thickness=-1)
    return image


def pip_requirements(classifier_path: str | Path) -> list[str]:
    """Pinned to what is installed: pyfunc would otherwise load the model in a subprocess to
    infer them (slow with TensorFlow) and may miss the TFLite runtime, imported lazily."""
    names = ["numpy", "pandas", "opencv-python-headless"]
    if Path(classifier_path).suffix == ".tflite":
        names.append(_first_installed("ai-edge-litert", "tensorflow-cpu", "tensorflow"))
    else:
        names += [_first_installed("tensorflow-cpu", "tensorflow"), "keras"]
    return [f"{name}=={metadata.version(name)}" for name in names]


def _first_installed(*names: str) -> str:
    for name in names:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        return name
    raise RuntimeError(f"none of {names} is installed")


def log_predictor(classifier_path: str | Path, config: PredictorConfig,
                  name: str = "whole_image_predictor",
                  registered_model_name: str | None = None,
                  input_example: pd.DataFrame | None = None) -> mlflow.models.model.ModelInfo:
    """Log the classifier file with the pre/post-processing as one servable pyfunc model.

    The `ssc_skin` package travels as code (`code_paths`), so the model loads where the
    project is not installed; the signature is inferred from a run on `input_example`.
    """
    if input_example is None:
        input_example = pd.DataFrame({"image": [encode_image(example_image(config))]})
    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=WholeImagePredictor(config),
        artifacts={CLASSIFIER_ARTIFACT: str(classifier_path)},
        code_paths=[str(_PACKAGE_DIR)],
        pip_requirements=pip_requirements(classifier_path),
        input_example=input_example,
        registered_model_name=registered_model_name,
        metadata={"predictor_config": asdict(config)},
    )
    logger.info("logged whole-image predictor %s (%s)", info.model_uri,
                Path(classifier_path).name)
    return info
