"""Keras model builders: a UNet for tissue segmentation and the classifier registry.

Adding a classifier architecture is one builder function registered in `ARCHITECTURES` plus a
block in `conf/base/parameters_classification.yml`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
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


def build_unet(
    input_size: int, n_classes: int, base_filters: int = 16, depth: int = 3
) -> keras.Model:
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


def build_mobilenetv2(
    input_size: int,
    n_classes: int,
    alpha: float = 0.35,
    weights: str | None = None,
    weights_fallback: str | None = None,
    dropout: float = 0.2,
    **_: Any,
) -> keras.Model:
    """MobileNetV2 (keras.applications) with a small classifier head.

    `weights`: "imagenet", None, or a path to a weights file. When ImageNet weights cannot be
    downloaded (no network), one clear warning is logged and `weights_fallback` is used.
    """
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inputs)
    base = _mobilenet_base(input_size, alpha, weights, weights_fallback)
    if not base.pretrained or base.weights_source.startswith("file"):
        _speed_up_batchnorm(base)  # random, or this project's own short pretraining
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


def _mobilenet_base(
    input_size: int, alpha: float, weights: str | None, fallback: str | None
) -> keras.Model:
    def build(w: str | None) -> keras.Model:
        return keras.applications.MobileNetV2(
            input_shape=(input_size, input_size, 3),
            alpha=alpha,
            include_top=False,
            weights=w,
            pooling="avg",
        )

    return _with_weights(build, weights, fallback, "mobilenetv2")


def imagenet_cache_file(architecture: str, input_size: int, alpha: float = 1.0) -> str:
    """The file in Keras' cache (`~/.keras/models/`, or `$KERAS_HOME/models/`) that
    `weights: imagenet` reads instead of downloading: copy it there on an offline machine.

    Keras picks the ImageNet weights of the nearest supported input size: MobileNetV2 has
    weights for 96, 128, 160, 192 and 224 px and uses the 224 px file for any other size.
    """
    if architecture == "mobilenetv2":
        rows = input_size if input_size in (96, 128, 160, 192, 224) else 224
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
    if architecture == "densenet":
        return "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"
    raise ValueError(f"no ImageNet weights for architecture {architecture!r}")


def _with_weights(
    build: Callable[[str | None], keras.Model], weights: str | None, fallback: str | None, name: str
) -> keras.Model:
    """`build(weights)`, marked with where its weights came from. `weights`: "imagenet",
    None (random) or a path to a weights file (`.weights.h5` or `.keras`, e.g. what the
    `pretrain` pipeline writes). A path that does not exist stops with one message naming the
    key; ImageNet weights that cannot be fetched (no network, no cached file) fall back to
    `fallback` with one warning."""
    key = f"classification.architectures.{name}.options.weights"
    if weights not in (None, "imagenet") and not Path(str(weights)).is_file():
        raise ValueError(
            f"{key}: weights file {weights} not found; run `kedro run --pipeline "
            "pretrain` to make it, or set weights: null (random) or imagenet"
        )
    try:
        base = build(weights)
    except Exception as error:  # keras raises plain Exception on a failed download
        if weights is None:
            raise
        if weights != "imagenet":
            raise ValueError(
                f"{key}: {weights} does not fit this backbone ({error}); was it "
                "pretrained for this architecture and options "
                "(pretrain.architecture, alpha, variant)?"
            ) from error
        logger.warning(
            "%s ImageNet weights could not be loaded (%s: %s); using weights=%s "
            "instead (%s_fallback)",
            name,
            type(error).__name__,
            error,
            fallback,
            key,
        )
        base = build(fallback)
        base.weights_source = f"{fallback} (fallback: imagenet unavailable)"
        base.pretrained = fallback is not None
        return base
    base.weights_source = (
        "random"
        if weights is None
        else "imagenet"
        if weights == "imagenet"
        else f"file {Path(str(weights)).name}"
    )
    base.pretrained = weights is not None
    return base


def build_cnn(
    input_size: int,
    n_classes: int,
    filters: tuple[int, ...] = (16, 32, 64, 64),
    dense_units: int = 128,
    dropout: float = 0.3,
    **_: Any,
) -> keras.Model:
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


def _dense_block(x: Any, layers_in_block: int, growth_rate: int, name: str) -> Any:
    """DenseNet-BC block: each layer (BN-ReLU-1x1 conv-BN-ReLU-3x3 conv) sees the
    concatenated feature maps of every earlier layer of the block."""
    for i in range(layers_in_block):
        y = layers.BatchNormalization(momentum=0.9, name=f"{name}_l{i}_bn1")(x)
        y = layers.ReLU(name=f"{name}_l{i}_relu1")(y)
        y = layers.Conv2D(4 * growth_rate, 1, use_bias=False, name=f"{name}_l{i}_conv1")(y)
        y = layers.BatchNormalization(momentum=0.9, name=f"{name}_l{i}_bn2")(y)
        y = layers.ReLU(name=f"{name}_l{i}_relu2")(y)
        y = layers.Conv2D(
            growth_rate, 3, padding="same", use_bias=False, name=f"{name}_l{i}_conv2"
        )(y)
        x = layers.Concatenate(name=f"{name}_l{i}_concat")([x, y])
    return x


def _compact_densenet(
    input_size: int,
    growth_rate: int,
    block_layers: tuple[int, ...],
    stem_filters: int,
    compression: float,
) -> keras.Model:
    """A small DenseNet-BC backbone (Huang et al. 2017): stem, dense blocks joined by
    compressing transitions (1x1 conv + 2x2 average pooling), global average pooling."""
    inputs = keras.Input((input_size, input_size, 3), name="scaled_image")
    x = layers.Conv2D(stem_filters, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    for b, n in enumerate(block_layers):
        x = _dense_block(x, n, growth_rate, f"block{b}")
        if b < len(block_layers) - 1:
            x = layers.BatchNormalization(momentum=0.9, name=f"transition{b}_bn")(x)
            x = layers.ReLU(name=f"transition{b}_relu")(x)
            x = layers.Conv2D(
                max(1, int(x.shape[-1] * compression)),
                1,
                use_bias=False,
                name=f"transition{b}_conv",
            )(x)
            x = layers.AveragePooling2D(2, name=f"transition{b}_pool")(x)
    x = layers.BatchNormalization(momentum=0.9, name="final_bn")(x)
    x = layers.ReLU(name="final_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, x, name="densenet_backbone")


def build_densenet(
    input_size: int,
    n_classes: int,
    variant: str = "compact",
    growth_rate: int = 12,
    block_layers: tuple[int, ...] = (4, 4, 4),
    stem_filters: int = 24,
    compression: float = 0.5,
    dense_units: tuple[int, ...] = (128, 64),
    dropout: float = 0.3,
    weights: str | None = None,
    weights_fallback: str | None = None,
    **_: Any,
) -> keras.Model:
    """The paper's baseline: a densely connected CNN with added classifier layers (fully
    connected ReLU layers with dropout before the softmax).

    `variant`: `compact` (a small DenseNet-BC, trainable on a CPU in minutes) or `densenet121`
    (keras.applications.DenseNet121; ImageNet weights where a network or Keras' cache has
    them). `weights`: None, "imagenet" (densenet121 only) or a path to backbone weights.
    """
    if variant not in ("compact", "densenet121"):
        raise ValueError(
            "classification.architectures.densenet.options.variant must be one "
            f"of compact, densenet121; got {variant!r}"
        )
    inputs = keras.Input((input_size, input_size, 3), name="image")
    if variant == "densenet121":
        x = layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inputs)

        def build(w: str | None) -> keras.Model:
            return keras.applications.DenseNet121(
                input_shape=(input_size, input_size, 3), include_top=False, weights=w, pooling="avg"
            )
    else:
        if weights == "imagenet":
            raise ValueError(
                "classification.architectures.densenet.options.weights: imagenet "
                "needs variant: densenet121 (the compact variant has no ImageNet "
                "weights); use null or a weights file"
            )
        x = layers.Rescaling(1 / 255.0, name="scale")(inputs)

        def build(w: str | None) -> keras.Model:
            backbone = _compact_densenet(
                input_size, growth_rate, tuple(block_layers), stem_filters, compression
            )
            if w is not None:
                backbone.load_weights(w)
            return backbone

    base = _with_weights(build, weights, weights_fallback, "densenet")
    if not base.pretrained or base.weights_source.startswith("file"):
        _speed_up_batchnorm(base)
    x = base(x)
    for i, units in enumerate(dense_units):
        x = layers.Dense(units, activation="relu", name=f"classifier_dense{i}")(x)
        x = layers.Dropout(dropout, name=f"classifier_dropout{i}")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="densenet")
    model.weights_source = base.weights_source
    model.pretrained = base.pretrained
    return model


ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    "mobilenetv2": build_mobilenetv2,
    "cnn": build_cnn,
    "densenet": build_densenet,
}


def build_classifier(
    name: str, input_size: int, n_classes: int, options: dict[str, Any]
) -> keras.Model:
    """Look up `name` in the registry and build it with its config options."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; allowed: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](input_size=input_size, n_classes=n_classes, **options)
