"""Whole-image prediction as an MLflow pyfunc model, servable with `mlflow models serve`.

A client posts whole biopsy images (base64 PNG/JPEG); the model runs the training run's own
preprocessing (`preprocessing.preprocess`: tissue, tiles, the fitted stain normaliser, UNet
gating on the exported UNet, the same fallbacks), classifies the chosen patches and averages
the probabilities, as the evaluation aggregates patches to images.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from PIL import Image, UnidentifiedImageError

from ssc_skin import aggregation
from ssc_skin.inference import composite
from ssc_skin.preprocessing.preprocess import PreprocessConfig, Preprocessor

logger = logging.getLogger(__name__)

CLASSIFIER_ARTIFACT = "classifier"
UNET_ARTIFACT = "unet"
NO_TISSUE = "no tissue"
_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/ssc_skin, shipped as code

Classifier = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class PredictorConfig:
    """What the served model must repeat from training: the preprocessing (the training run's
    `preprocess.json`, fitted stain normaliser and gating included), the classes, limits."""

    class_names: tuple[str, ...]
    input_size: int  # the classifier's input (patches are resized to it)
    preprocess: Mapping[str, Any] = field(default_factory=lambda: PreprocessConfig().to_dict())
    low_confidence_threshold: float = 0.6  # max mean probability below it flags the image
    batch_size: int | None = None  # None: each runtime's fastest (Keras 32, TFLite 8)
    num_threads: int = 2
    max_image_pixels: int = 64_000_000  # larger images are refused before decoding
    max_image_bytes: int = 64 * 2**20  # a larger base64 payload is refused unread

    def __post_init__(self) -> None:
        if len(self.class_names) < 2 or NO_TISSUE in self.class_names:
            raise ValueError(
                f"need >= 2 class names, none of them {NO_TISSUE!r}; got {self.class_names}"
            )
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(
            self, "preprocess", PreprocessConfig.from_dict(self.preprocess).to_dict()
        )

    @property
    def preprocessing(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.preprocess)


def output_columns(class_names: Sequence[str]) -> list[str]:
    return [
        "label",
        *(f"probability_{c}" for c in class_names),
        "n_patches",
        "selection",
        "low_confidence",
    ]


def encode_image(image: np.ndarray, extension: str = ".png") -> str:
    """RGB uint8 array -> base64 text, as a REST client sends it."""
    ok, buffer = cv2.imencode(extension, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode image as {extension}")
    return base64.b64encode(buffer.tobytes()).decode("ascii")


def decode_image(
    value: Any, max_pixels: int = 64_000_000, max_bytes: int = 64 * 2**20
) -> np.ndarray:
    """Base64 PNG/JPEG (a data-URI prefix is allowed) or raw image bytes -> RGB uint8.

    The size is read from the header and checked before anything is decompressed, so a small
    file declaring a huge image cannot exhaust memory. Grey or RGBA images become RGB: the
    classifier was trained on three channels.
    """
    if value is None or (isinstance(value, str | bytes) and not value.strip()):
        raise ValueError("empty image: send a base64 PNG or JPEG")
    if not isinstance(value, str | bytes):
        raise ValueError(f"image must be base64 text, got {type(value).__name__}")
    if len(value) > max_bytes * 4 // 3 + 4:
        raise ValueError(f"image payload is larger than {max_bytes // 2**20} MiB")
    raw = value if isinstance(value, bytes) and _looks_like_image(value) else _b64(value)
    width, height = _declared_size(raw)
    if width * height > max_pixels:
        raise ValueError(
            f"image of {width}x{height} px is larger than the limit of {max_pixels:,} pixels"
        )
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a decodable PNG/JPEG image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _declared_size(raw: bytes) -> tuple[int, int]:
    """(width, height) from the image header alone (Pillow reads no pixels here)."""
    try:
        with Image.open(io.BytesIO(raw)) as header:
            if header.format not in ("PNG", "JPEG", "MPO"):
                raise ValueError(f"not a PNG/JPEG image ({header.format})")
            return header.size
    except Image.DecompressionBombError:
        raise ValueError(
            "image is larger than the limit of pixels a decoder may open (a decompression bomb?)"
        ) from None
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"not a decodable PNG/JPEG image ({type(error).__name__})") from None


def _looks_like_image(raw: bytes) -> bool:
    return raw.startswith((b"\x89PNG", b"\xff\xd8\xff"))


def _b64(value: str | bytes) -> bytes:
    try:
        text = value.decode("ascii") if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError:
        raise ValueError("image is neither PNG/JPEG bytes nor base64 text") from None
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"image is not valid base64: {error}") from error


def summarise(
    probabilities: np.ndarray,
    class_names: Sequence[str],
    low_confidence_threshold: float,
    selection: str = "ok",
) -> dict[str, Any]:
    """One output row from an image's patch probabilities: their mean per class
    (`aggregation`), its call and a confidence flag."""
    n = len(probabilities)
    mean = np.asarray(probabilities, float).mean(axis=0) if n else None
    return summarise_mean(mean, n, class_names, low_confidence_threshold, selection)


def summarise_mean(
    mean: np.ndarray | None,
    n_patches: int,
    class_names: Sequence[str],
    low_confidence_threshold: float,
    selection: str = "ok",
) -> dict[str, Any]:
    """One output row from a unit's mean patch probabilities over `n_patches` patches.

    No patches (no tissue found) gives label "no tissue", null probabilities (valid JSON,
    unlike NaN) and the flag set: there is nothing to screen, and a reviewer should look at
    the slide. A fallback `selection` (no patch passed the tissue or gating threshold) is
    named and always flagged low-confidence.
    """
    n = int(n_patches)
    row: dict[str, Any] = {"label": class_names[int(aggregation.decide(mean))] if n else NO_TISSUE}
    row.update(
        {f"probability_{c}": float(mean[i]) if n else None for i, c in enumerate(class_names)}
    )
    row["n_patches"] = n
    row["selection"] = selection
    row["low_confidence"] = bool(
        not n or selection != "ok" or float(np.max(mean)) < low_confidence_threshold
    )
    return row


def predict_image(
    image: np.ndarray, classifier: Classifier, preprocessor: Preprocessor, config: PredictorConfig
) -> dict[str, Any]:
    """One whole image -> one output row, through the training run's preprocessing."""
    patches, found = preprocessor.patches_for_classifier(image, config.input_size)
    probabilities = (
        classifier(patches) if len(patches) else np.zeros((0, len(config.class_names)), np.float32)
    )
    return summarise(
        probabilities, config.class_names, config.low_confidence_threshold, found.selection
    )


def load_classifier(
    path: str | Path, num_threads: int = 2, batch_size: int | None = None
) -> Classifier:
    """A `.tflite` file runs on LiteRT, a `.keras` file on Keras; both take uint8-range RGB
    patches and return probabilities. A folder with `classifier.json` is the colour + texture
    peer or the hybrid (`inference.composite`), its deep components loaded the same way."""
    path = Path(path)
    if composite.is_composite(path):
        return locked(
            composite.load(path, lambda part: load_classifier(part, num_threads, batch_size))
        )
    if path.suffix == ".tflite":
        from ssc_skin.inference.export import TFLiteClassifier  # noqa: PLC0415 - keeps TF import lazy

        return TFLiteClassifier(path.read_bytes(), num_threads, batch_size or 8).predict
    if path.suffix == ".keras":
        import keras  # noqa: PLC0415

        from ssc_skin.inference.export import keras_predictor  # noqa: PLC0415
        from ssc_skin.models import tta  # noqa: F401, PLC0415 - the layers a classifier may hold

        model = keras.models.load_model(path, compile=False)
        return locked(keras_predictor(model, batch_size or 32))
    raise ValueError(f"classifier must be a .keras or .tflite file, got {path.name}")


def locked(fn: Classifier) -> Classifier:
    """Serialise calls: server threads sharing one Keras model would oversubscribe 2 cores."""
    lock = threading.Lock()

    def call(patches: np.ndarray) -> np.ndarray:
        with lock:
            return fn(patches)

    return call


def load_unet(path: str | Path, num_threads: int = 2) -> Classifier:
    """The gating UNet from its `.tflite` file (the runtime training gated with)."""
    from ssc_skin.inference.export import tflite_segmenter  # noqa: PLC0415

    return tflite_segmenter(Path(path).read_bytes())


class WholeImagePredictor(mlflow.pyfunc.PythonModel):
    """Whole-image SSc screening: base64 images in, one row of class probabilities out."""

    def __init__(self, config: PredictorConfig) -> None:
        self.config = config
        self._classifier: Classifier | None = None
        self._preprocessor: Preprocessor | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The loaded models are rebuilt from the artifacts by `load_context`, never pickled.
        return {"config": self.config, "_classifier": None, "_preprocessor": None}

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self._classifier = load_classifier(
            context.artifacts[CLASSIFIER_ARTIFACT], self.config.num_threads, self.config.batch_size
        )
        unet_path = context.artifacts.get(UNET_ARTIFACT)
        unet = load_unet(unet_path, self.config.num_threads) if unet_path else None
        if self.config.preprocessing.use_segmentation and unet is None:
            raise MlflowException(
                "this predictor gates patches with a UNet, but the model "
                f"has no {UNET_ARTIFACT!r} artifact"
            )
        self._preprocessor = Preprocessor(self.config.preprocessing, unet)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        if self._classifier is None or self._preprocessor is None:
            raise MlflowException("classifier not loaded: load the model with mlflow.pyfunc")
        if not isinstance(model_input, pd.DataFrame) or "image" not in model_input.columns:
            columns = list(getattr(model_input, "columns", []))
            raise MlflowException.invalid_parameter_value(
                f"input needs a column 'image' (base64 PNG/JPEG); got {columns}"
            )
        rows = []
        for i, value in enumerate(model_input["image"]):
            try:
                image = decode_image(
                    value, self.config.max_image_pixels, self.config.max_image_bytes
                )
            except ValueError as error:
                raise MlflowException.invalid_parameter_value(f"row {i}: {error}") from None
            rows.append(predict_image(image, self._classifier, self._preprocessor, self.config))
        frame = pd.DataFrame(rows, columns=output_columns(self.config.class_names))
        return frame.astype(object).where(frame.notna(), None)  # null in JSON, never NaN


def example_image(config: PredictorConfig) -> np.ndarray:
    """A pink stained disc on white glass, big enough for a few patches: the input example."""
    side = 2 * config.preprocessing.patch_size
    image = np.full((side, side, 3), 245, np.uint8)
    cv2.circle(image, (side // 2, side // 2), int(side * 0.45), (200, 90, 160), thickness=-1)
    return image


def pip_requirements(classifier_path: str | Path) -> list[str]:
    """Pinned to what is installed: pyfunc would otherwise load the model in a subprocess to
    infer them (slow with TensorFlow) and may miss the TFLite runtime, imported lazily."""
    names = ["numpy", "pandas", "opencv-python-headless"]
    if composite.is_composite(classifier_path):  # peer or hybrid: scikit-learn, any runtime
        names += [
            "scikit-learn",
            _first_installed("ai-edge-litert", "tensorflow-cpu", "tensorflow"),
        ]
        names += [_first_installed("tensorflow-cpu", "tensorflow"), "keras"]
    elif Path(classifier_path).suffix == ".tflite":
        names.append(_first_installed("ai-edge-litert", "tensorflow-cpu", "tensorflow"))
    else:
        names += [_first_installed("tensorflow-cpu", "tensorflow"), "keras"]
    return [f"{name}=={metadata.version(name)}" for name in dict.fromkeys(names)]


def _first_installed(*names: str) -> str:
    for name in names:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        return name
    raise RuntimeError(f"none of {names} is installed")


def log_predictor(
    classifier_path: str | Path,
    config: PredictorConfig,
    unet_path: str | Path | None = None,
    name: str = "whole_image_predictor",
    registered_model_name: str | None = None,
    input_example: pd.DataFrame | None = None,
) -> mlflow.models.model.ModelInfo:
    """Log the classifier file with the pre/post-processing as one servable pyfunc model.

    The `ssc_skin` package travels as code (`code_paths`), so the model loads where the
    project is not installed; the signature is inferred from a run on `input_example`.
    """
    if input_example is None:
        input_example = pd.DataFrame({"image": [encode_image(example_image(config))]})
    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=WholeImagePredictor(config),
        artifacts={
            CLASSIFIER_ARTIFACT: str(classifier_path),
            **({UNET_ARTIFACT: str(unet_path)} if unet_path else {}),
        },
        code_paths=[str(_PACKAGE_DIR)],
        pip_requirements=pip_requirements(classifier_path),
        input_example=input_example,
        registered_model_name=registered_model_name,
        metadata={"predictor_config": asdict(config)},
    )
    logger.info("logged whole-image predictor %s (%s)", info.model_uri, Path(classifier_path).name)
    return info
