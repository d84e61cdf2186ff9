"""Keras model builders: a UNet for tissue segmentation and the classifier registry.

Adding a classifier architecture is one builder function registered in `ARCHITECTURES` plus a
block in `conf/base/parameters_classification.yml`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import keras
from keras import layers

logger = logging.getLogger(__name__)


def _conv_block(x: Any, filters: int, name: str) -> Any:
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        # momentum 0.9: small CPU runs take few steps, and 0.99 leaves validation stats stale
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn{i}")(x)
        x = layers.ReLU(name=f"{name}_relu{i}")(x)
    return x


def build_unet(input_size: int, n_classes: int, base_filters: int = 16,
               depth: int = 3) -> keras.Model:
    """A compact UNet (Ronneberger et al. 2015): encoder, bottleneck, decoder with skips."""
    if input_size % (2**depth):
        raise ValueError(f"UNet input_size {input_size} must be divisible by 2**depth={2**depth}")
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Rescaling(1 / 255.0, name="scale")(inputs)
    skips = []
    for level in range(depth):
        x = _conv_block(x, base_filters * 2**level, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(name=f"pool{level}")(x)
    x = _conv_block(x, base_filters * 2**depth, "bottleneck")
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(base_filters * 2**level, 2, strides=2, name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = _conv_block(x, base_filters * 2**level, f"dec{level}")
    outputs = layers.Conv2D(n_classes, 1, activation="softmax", name="mask")(x)
    return keras.Model(inputs, outputs, name="unet")


def build_mobilenetv2(input_size: int, n_classes: int, alpha: float = 0.35,
                      weights: str | None = None, weights_fallback: str | None = None,
                      dropout: float = 0.2, **_: Any) -> keras.Model:
    """MobileNetV2 (keras.applications) with a small classifier head.

    `weights`: "imagenet", None, or a path to a weights file. When ImageNet weights cannot be
    downloaded (no network), one clear warning is logged and `weights_fallback` is used.
    """
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inputs)
    base = _mobilenet_base(input_size, alpha, weights, weights_fallback)
    if not base.pretrained:
        _speed_up_batchnorm(base)
    x = base(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="mobilenetv2")
    model.weights_source = base.weights_source  # recorded in MLflow by the training node
    model.pretrained = base.pretrained  # decides frozen-then-fine-tune in the training node
    return model


def _speed_up_batchnorm(model: keras.Model, momentum: float = 0.9) -> None:
    """Keras' MobileNetV2 uses BN momentum 0.999, tuned for ImageNet-length training: after the
    few hundred steps of a CPU run from scratch its moving statistics are still the initial ones
    and validation predictions collapse to one class. 0.9 tracks the data within ~20 steps."""
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = momentum


def _mobilenet_base(input_size: int, alpha: float, weights: str | None,
                    fallback: str | None) -> keras.Model:
    def build(w: str | None) -> keras.Model:
        base = keras.applications.MobileNetV2(input_shape=(input_size, input_size, 3),
                                              alpha=alpha, include_top=False, weights=w,
                                              pooling="avg")
        base.pretrained = w is not None
        return base
    try:
        base = build(weights)
        base.weights_source = str(weights)
    except Exception as error:  # keras raises plain Exception on a failed download
        if weights != "imagenet":
            raise
        logger.warning("MobileNetV2 ImageNet weights could not be loaded (%s: %s); "
                       "using weights=%s instead (classifier.architectures.mobilenetv2."
                       "weights_fallback)", type(error).__name__, error, fallback)
        base = build(fallback)
        base.weights_source = f"{fallback} (fallback: imagenet unavailable)"
    return base


def build_cnn(input_size: int, n_classes: int, filters: tuple[int, ...] = (16, 32, 64, 64),
              dense_units: int = 128, dropout: float = 0.3, **_: Any) -> keras.Model:
    """The paper's baseline: a plain stack of double-conv blocks, then dense classifier layers.

    Batch normalisation is the one modern touch: without it this plain stack stays at chance
    for the few epochs a CPU run can afford.
    """
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Rescaling(1 / 255.0, name="scale")(inputs)
    for i, f in enumerate(filters):
        x = _conv_block(x, f, f"block{i}")
        x = layers.MaxPooling2D(name=f"block{i}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="cnn")
    model.weights_source = "random"
    model.pretrained = False
    return model


ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    "mobilenetv2": build_mobilenetv2,
    "cnn": build_cnn,
}


def build_classifier(name: str, input_size: int, n_classes: int,
                     options: dict[str, Any]) -> keras.Model:
    """Look up `name` in the registry and build it with its config options."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; allowed: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](input_size=input_size, n_classes=n_classes, **options)
