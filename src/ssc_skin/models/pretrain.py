"""Pretraining a classifier backbone without internet: supervised on a synthetic cohort.

The paper fine-tunes ImageNet weights; an offline machine has none (unless Keras' cache file
is copied over, see `builders.imagenet_cache_file`). This stage pretrains the same backbone on
patches of a large synthetic cohort, whose ground truth is free: per patch the share of each
tissue compartment (background, epidermis, dermis, fat, from the simulator's masks) and,
optionally, the section's disease severity. The backbone's weights go to a file that
`classification.architectures.<arch>.options.weights` takes; the classifier then trains
frozen-then-fine-tune like any pretrained backbone.

Kedro-free: arrays in, a Keras backbone and its history out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from ssc_skin.constants import MASK_CLASSES
from ssc_skin.imaging import tiling
from ssc_skin.imaging.tissue import tissue_mask
from ssc_skin.models import builders, seeding

logger = logging.getLogger(__name__)
TARGETS = ("compartment", "severity")


def compartment_fractions(masks: np.ndarray) -> np.ndarray:
    """(N, 4) share of each mask class (background, epidermis, dermis, fat) per patch."""
    n_classes = len(MASK_CLASSES)
    flat = np.asarray(masks).reshape(len(masks), -1)
    counts = np.stack([(flat == k).sum(axis=1) for k in range(n_classes)], axis=1)
    return (counts / max(flat.shape[1], 1)).astype(np.float32)


def tile_sections(
    sections: Iterable[Any],
    patch_size: int,
    min_tissue_fraction: float = 0.5,
    max_patches: int | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Tissue patches of synthetic sections (image, mask, severity) with their pretext targets:
    `images` (N, s, s, 3) uint8, `compartment` (N, 4), `severity` (N,)."""
    images, masks, severity = [], [], []
    for section in sections:
        tissue = tissue_mask(section.image)
        for tile in tiling.grid_tiles(tissue, patch_size, patch_size, min_tissue_fraction):
            images.append(tiling.crop(section.image, tile, patch_size))
            masks.append(tiling.crop(section.mask, tile, patch_size))
            severity.append(section.severity)
    if not images:
        raise ValueError(
            "the pretraining cohort gave no tissue patch; raise "
            "pretrain.cohort.image_size or lower pretrain.min_tissue_fraction"
        )
    order = np.random.default_rng(seed).permutation(len(images))
    if max_patches:
        order = order[:max_patches]
    return {
        "images": np.stack(images)[order],
        "compartment": compartment_fractions(np.stack(masks)[order]),
        "severity": np.asarray(severity, np.float32)[order],
    }


def backbone(architecture: str, input_size: int, options: dict[str, Any]) -> keras.Model:
    """A random-init backbone of the registry's `architecture`, as the classifier nests it."""
    model = builders.build_classifier(
        architecture, input_size, 2, {**options, "weights": None, "weights_fallback": None}
    )
    base = next((layer for layer in model.layers if isinstance(layer, keras.Model)), None)
    if base is None:
        raise ValueError(
            f"architecture {architecture!r} has no nested backbone to pretrain "
            "(pretrain.architecture must be mobilenetv2 or densenet)"
        )
    return base, model.get_layer("scale")


def pretext_model(
    base: keras.Model, scale: layers.Layer, input_size: int, targets: tuple[str, ...]
) -> keras.Model:
    """Backbone + one head per pretext target: compartment shares (softmax) and severity."""
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown or not targets:
        raise ValueError(
            f"pretrain.targets must be a non-empty subset of {list(TARGETS)}; got {list(targets)}"
        )
    inputs = keras.Input((input_size, input_size, 3), name="image")
    features = base(layers.Rescaling.from_config(scale.get_config())(inputs))
    outputs = {}
    if "compartment" in targets:
        outputs["compartment"] = layers.Dense(
            len(MASK_CLASSES), activation="softmax", name="compartment"
        )(features)
    if "severity" in targets:
        outputs["severity"] = layers.Dense(1, activation="sigmoid", name="severity")(features)
    return keras.Model(inputs, outputs, name="pretext")


def _augment(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Flips and 90-degree turns (a section has no orientation a patch could know)."""
    image = tf.image.stateless_random_flip_left_right(image, seed)
    image = tf.image.stateless_random_flip_up_down(image, seed + 1)
    return tf.image.rot90(image, tf.random.stateless_uniform([], seed + 2, 0, 4, tf.int32))


def _dataset(
    arrays: dict[str, np.ndarray],
    rows: np.ndarray,
    targets: tuple[str, ...],
    batch_size: int,
    seed: int,
    train: bool,
) -> tf.data.Dataset:
    y = {t: arrays[t][rows] if t == "compartment" else arrays[t][rows, None] for t in targets}
    ds = tf.data.Dataset.from_tensor_slices((arrays["images"][rows], y))
    if train:
        ds = ds.shuffle(len(rows), seed=seed)
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda xy, s: (_augment(xy[0], tf.cast(s, tf.int32) % (2**30)), xy[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def pretext_callbacks(label: str, epochs: int, patience: int) -> list[keras.callbacks.Callback]:
    """Early stopping on the held-out patches' loss (best weights restored) and one log line
    per epoch with every loss and the time so far: a pretext fit takes minutes."""
    start = time.perf_counter()
    return [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=patience, restore_best_weights=True
        ),
        keras.callbacks.LambdaCallback(
            on_epoch_end=lambda e, logs: logger.info(
                "%s epoch %d/%d: %s (%.0f s)",
                label,
                e + 1,
                epochs,
                ", ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items()),
                time.perf_counter() - start,
            )
        ),
    ]


def pretrain(
    arrays: dict[str, np.ndarray],
    architecture: str,
    input_size: int,
    options: dict[str, Any],
    targets: tuple[str, ...] = TARGETS,
    epochs: int = 8,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[keras.Model, dict[str, Any]]:
    """Fit the pretext heads on the synthetic patches; return the backbone (best validation
    loss restored) and a summary with the per-epoch history."""
    seeding.set_seed(seed)
    images = tiling.resize_batch(arrays["images"], input_size)
    arrays = {**arrays, "images": images}
    base, scale = backbone(architecture, input_size, options)
    model = pretext_model(base, scale, input_size, tuple(targets))
    losses = {"compartment": "categorical_crossentropy", "severity": "mse"}
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss={t: losses[t] for t in targets}
    )
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = max(1, int(val_fraction * len(order)))
    val_rows, train_rows = order[:n_val], order[n_val:]
    start = time.perf_counter()
    history = model.fit(
        _dataset(arrays, train_rows, tuple(targets), batch_size, seed, train=True),
        validation_data=_dataset(arrays, val_rows, tuple(targets), batch_size, seed, False),
        epochs=epochs,
        verbose=0,
        callbacks=pretext_callbacks("pretrain", epochs, patience=3),
    )
    seconds = time.perf_counter() - start
    summary = {
        "architecture": architecture,
        "input_size": input_size,
        "options": {k: v for k, v in options.items() if k != "weights"},
        "targets": list(targets),
        "train_patches": len(train_rows),
        "val_patches": len(val_rows),
        "seconds": seconds,
        "epochs_run": len(history.history["loss"]),
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
    }
    return base, summary
