"""Self-supervised pretraining of a classifier backbone: SimCLR on unlabelled tissue patches.

Offline there are no ImageNet weights, but a lab has many unlabelled slides. SimCLR (Chen et
al. 2020) learns features without labels: two random views of each patch (crop, flips and
turns, HED stain jitter, colour jitter) must map close together and far from every other
patch of the batch (the NT-Xent loss). The backbone learns what survives a stain batch, a
scanner and an orientation (tissue structure), which is what the classifier needs.

Kedro-free: uint8 patches in, the Keras backbone and its history out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from ssc_skin.models import pretrain, seeding, training

logger = logging.getLogger(__name__)

# Stronger than the classifier's training jitter (0.05/0.05): the pretext task must not be
# solvable by stain colour alone.
DEFAULT_VIEW = {"min_crop": 0.5, "stain_sigma": 0.15, "stain_bias": 0.1}


def simclr_view(
    input_size: int, min_crop: float, stain_sigma: float, stain_bias: float
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """One random view of a uint8 patch as float RGB in [0, 1] at `input_size`: a random crop
    of `min_crop`-1 of the side, flips and a 90-degree turn, HED stain and colour jitter."""

    def view(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        pixels = tf.cast(image, tf.float32) / 255.0
        side = tf.shape(pixels)[0]
        fraction = tf.random.stateless_uniform([], seed, min_crop, 1.0)
        crop = tf.maximum(tf.cast(tf.cast(side, tf.float32) * fraction, tf.int32), 1)
        pixels = tf.image.stateless_random_crop(pixels, tf.stack([crop, crop, 3]), seed + 1)
        pixels = tf.image.resize(pixels, (input_size, input_size), antialias=True)
        pixels = tf.image.stateless_random_flip_left_right(pixels, seed + 2)
        pixels = tf.image.stateless_random_flip_up_down(pixels, seed + 3)
        pixels = tf.image.rot90(pixels, tf.random.stateless_uniform([], seed + 4, 0, 4, tf.int32))
        pixels = training.hed_jitter(pixels, seed + 5, stain_sigma, stain_bias)
        pixels = tf.image.stateless_random_hue(pixels, 0.05, seed + 6)
        pixels = tf.image.stateless_random_saturation(pixels, 0.6, 1.4, seed + 7)
        pixels = tf.image.stateless_random_brightness(pixels, 0.1, seed + 8)
        pixels = tf.image.stateless_random_contrast(pixels, 0.7, 1.3, seed + 9)
        return tf.clip_by_value(pixels, 0.0, 1.0)

    return view


def nt_xent(z1: tf.Tensor, z2: tf.Tensor, temperature: float) -> tf.Tensor:
    """SimCLR's normalised-temperature cross-entropy: each view's positive is the other view of
    its patch; the other 2(B-1) views of the batch are its negatives."""
    z = tf.math.l2_normalize(tf.concat([z1, z2], axis=0), axis=1)
    n = tf.shape(z1)[0]
    logits = tf.matmul(z, z, transpose_b=True) / temperature
    logits = logits - 1e9 * tf.eye(2 * n)  # a view is not its own positive
    positives = tf.concat([tf.range(n, 2 * n), tf.range(0, n)], axis=0)
    return tf.reduce_mean(
        tf.keras.losses.sparse_categorical_crossentropy(positives, logits, from_logits=True)
    )


class SimCLR(keras.Model):
    """Encoder (scale + backbone) and projection head trained on pairs of views."""

    def __init__(self, encoder: keras.Model, projection_dim: int, temperature: float, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.head = keras.Sequential(
            [layers.Dense(128, activation="relu"), layers.Dense(projection_dim)], name="projection"
        )
        self.temperature = temperature
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker]

    def _loss(self, views: tuple[tf.Tensor, tf.Tensor], training: bool) -> tf.Tensor:
        z1 = self.head(self.encoder(views[0], training=training), training=training)
        z2 = self.head(self.encoder(views[1], training=training), training=training)
        return nt_xent(z1, z2, self.temperature)

    def train_step(self, views: tuple[tf.Tensor, tf.Tensor]) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as tape:
            loss = self._loss(views, training=True)
        variables = self.encoder.trainable_variables + self.head.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, views: tuple[tf.Tensor, tf.Tensor]) -> dict[str, tf.Tensor]:
        self.loss_tracker.update_state(self._loss(views, training=False))
        return {"loss": self.loss_tracker.result()}


def pair_dataset(
    images: np.ndarray, batch_size: int, view: Callable, seed: int, shuffle: bool
) -> tf.data.Dataset:
    """Batches of (view 1, view 2) of the same patches; full batches only (NT-Xent needs
    negatives, and a one-patch batch has none)."""
    ds = tf.data.Dataset.from_tensor_slices(images)
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    ds = tf.data.Dataset.zip((ds, seeds)).map(
        lambda image, s: (
            view(image, tf.cast(s, tf.int32) % (2**30)),
            view(image, (tf.cast(s, tf.int32) + 1000) % (2**30)),
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def pretrain_simclr(
    images: np.ndarray,
    base: keras.Model,
    scale: layers.Layer,
    input_size: int,
    *,
    epochs: int = 20,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    temperature: float = 0.2,
    projection_dim: int = 64,
    val_fraction: float = 0.1,
    view: dict[str, float] | None = None,
    seed: int = 0,
) -> tuple[keras.Model, dict[str, Any]]:
    """Fit `base` with SimCLR on uint8 patches (N, s, s, 3); return it (lowest validation
    loss restored) and a summary with the per-epoch history."""
    if len(images) < 4 * batch_size:
        raise ValueError(
            f"SimCLR needs at least 4 batches of patches: {len(images)} patches for "
            f"pretrain.batch_size {batch_size}; add images or lower pretrain.batch_size"
        )
    seeding.set_seed(seed)
    settings = {**DEFAULT_VIEW, **(view or {})}
    make_view = simclr_view(input_size, **settings)
    inputs = keras.Input((input_size, input_size, 3), name="image")
    # The views are in [0, 1]; the classifier feeds 0-255 through its own scale layer.
    encoder = keras.Model(
        inputs,
        base(layers.Rescaling.from_config(scale.get_config())(layers.Rescaling(255.0)(inputs))),
        name="encoder",
    )
    model = SimCLR(encoder, projection_dim, temperature, name="simclr")
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = max(batch_size, int(val_fraction * len(order)))
    val_rows, train_rows = order[:n_val], order[n_val:]
    steps = max(1, len(train_rows) // batch_size)  # full batches per epoch (drop_remainder)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps * epochs)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    start = time.perf_counter()
    history = model.fit(
        pair_dataset(images[train_rows], batch_size, make_view, seed, shuffle=True),
        validation_data=pair_dataset(images[val_rows], batch_size, make_view, seed + 1, False),
        epochs=epochs,
        verbose=0,
        callbacks=pretrain.pretext_callbacks("SimCLR", epochs, patience=4),
    )
    summary = {
        "method": "simclr",
        "input_size": input_size,
        "train_patches": len(train_rows),
        "val_patches": len(val_rows),
        "temperature": temperature,
        "batch_size": batch_size,
        "view": settings,
        "seconds": time.perf_counter() - start,
        "epochs_run": len(history.history["loss"]),
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
    }
    return base, summary
