"""Training loops for the UNet and the classifiers on in-memory patch arrays (tf.data)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.model_selection import train_test_split
from sklearn.utils.class_weight import compute_class_weight

from ssc_skin.models import seeding, trainers
from ssc_skin.models.progress import ProgressLogger

logger = logging.getLogger(__name__)

DISTRIBUTIONS = ("none", "mirrored")


@dataclass
class TrainingResult:
    """What a fit produced, for MLflow and the report."""

    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    patches_per_second: float = 0.0
    epochs_run: int = 0


# Ruifrok & Johnston's stain OD vectors (rows H, E, DAB), as `imaging.stain` uses them.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = _RGB_FROM_HED / np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)


def hed_jitter(pixels: tf.Tensor, seed: tf.Tensor, sigma: float, bias: float) -> tf.Tensor:
    """Random stain intensities in HED space (Tellez et al. 2018) on float RGB in [0, 1].

    Each stain's concentration is scaled by U(1-sigma, 1+sigma) and shifted by U(-bias, bias)
    (OD units, on stained pixels only, so glass stays white): a lab's stain batch, section
    thickness or scanner, which flips and hue jitter do not imitate.
    """
    od = -tf.math.log((pixels * 255.0 + 1.0) / 256.0)
    hed = tf.tensordot(od, tf.constant(_HED_FROM_RGB, tf.float32), 1)
    scale = tf.random.stateless_uniform([3], seed, 1.0 - sigma, 1.0 + sigma)
    shift = tf.random.stateless_uniform([3], seed + 7, -bias, bias)
    stained = tf.clip_by_value(tf.reduce_max(od, axis=-1, keepdims=True) / 0.3, 0.0, 1.0)
    hed = hed * scale + stained * shift
    od = tf.tensordot(hed, tf.constant(_RGB_FROM_HED, tf.float32), 1)
    return tf.clip_by_value((256.0 * tf.exp(-od) - 1.0) / 255.0, 0.0, 1.0)


def classifier_augmentation(
    stain: dict[str, float] | None = None,
) -> Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """Flips, 90-degree rotations and colour jitter; with `stain` ({sigma, bias}), HED stain
    jitter too.

    A histology patch has no preferred orientation, and stain colour varies by lab and patient:
    jitter keeps the models from telling patients apart by colour instead of by structure.
    """
    sigma = float((stain or {}).get("sigma", 0.0))
    bias = float((stain or {}).get("bias", 0.0))

    def augment(image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image_ = tf.image.stateless_random_flip_left_right(image, seed)
        image_ = tf.image.stateless_random_flip_up_down(image_, seed + 1)
        k = tf.random.stateless_uniform([], seed + 2, 0, 4, dtype=tf.int32)
        image_ = tf.image.rot90(image_, k)
        pixels = tf.cast(image_, tf.float32) / 255.0
        if sigma > 0 or bias > 0:
            pixels = hed_jitter(pixels, seed + 8, sigma, bias)
        pixels = tf.image.stateless_random_hue(pixels, 0.04, seed + 3)
        pixels = tf.image.stateless_random_saturation(pixels, 0.7, 1.3, seed + 4)
        pixels = tf.image.stateless_random_brightness(pixels, 0.08, seed + 5)
        pixels = tf.image.stateless_random_contrast(pixels, 0.8, 1.2, seed + 6)
        return tf.cast(tf.clip_by_value(pixels, 0.0, 1.0) * 255.0, image.dtype), label

    return augment


_augment = classifier_augmentation()


def _augment_pair(
    image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """The same flips for image and mask (only horizontal: layers run top to bottom)."""
    flip = tf.random.stateless_uniform([], seed, 0, 1) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
    mask = tf.cond(flip, lambda: tf.reverse(mask, axis=[1]), lambda: mask)
    return image, mask


@dataclass(frozen=True)
class SoftTargets:
    """One-hot training targets, softened: `label_smoothing` moves that much of each target
    to the other classes evenly (Szegedy et al. 2016); `mixup` > 0 blends each patch and its
    target with another patch of the batch by a Beta(mixup, mixup) weight (Zhang et al.
    2018). Validation targets stay one-hot (early stopping watches the true labels)."""

    n_classes: int
    label_smoothing: float = 0.0
    mixup: float = 0.0

    @classmethod
    def from_settings(cls, settings: dict[str, Any], n_classes: int) -> SoftTargets | None:
        smoothing = float(settings.get("label_smoothing") or 0.0)
        mixup = float(settings.get("mixup") or 0.0)
        if not 0 <= smoothing < 1 or mixup < 0:
            raise ValueError(
                "classification.training.label_smoothing must be in [0, 1) and mixup >= 0; "
                f"got {smoothing} and {mixup}"
            )
        return cls(n_classes, smoothing, mixup) if smoothing or mixup else None


def one_hot(labels: tf.Tensor, targets: SoftTargets, smooth: bool) -> tf.Tensor:
    onehot = tf.one_hot(tf.cast(labels, tf.int32), targets.n_classes)
    if smooth and targets.label_smoothing:
        onehot = (
            onehot * (1 - targets.label_smoothing) + targets.label_smoothing / targets.n_classes
        )
    return onehot


def mix_batch(
    images: tf.Tensor, onehot: tf.Tensor, seed: tf.Tensor, alpha: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixup within a batch: each sample blended with the batch reversed, weight max(w, 1-w)
    with w ~ Beta(alpha, alpha), so each patch stays the larger part of its own blend."""
    n = tf.shape(images)[0]
    a = tf.random.stateless_gamma([n], seed, alpha)
    b = tf.random.stateless_gamma([n], seed + 1, alpha)
    weight = a / (a + b)
    weight = tf.maximum(weight, 1.0 - weight)
    pixels = tf.cast(images, tf.float32)
    w_image = tf.reshape(weight, [-1, 1, 1, 1])
    mixed = w_image * pixels + (1 - w_image) * tf.reverse(pixels, [0])
    w_label = tf.reshape(weight, [-1, 1])
    return mixed, w_label * onehot + (1 - w_label) * tf.reverse(onehot, [0])


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    shuffle: bool,
    seed: int,
    augment: str | None = None,
    stain_augmentation: dict[str, float] | None = None,
    targets: SoftTargets | None = None,
    soften: bool = True,
) -> tf.data.Dataset:
    """A prefetched tf.data pipeline over arrays, with optional seeded augmentation
    (`classifier`: geometry, colour and, with `stain_augmentation`, HED jitter; else the
    UNet's paired flips). With `targets`, labels become one-hot, softened where `soften`
    (training: label smoothing and mixup; validation: plain one-hot)."""
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if augment:
        fn = (
            classifier_augmentation(stain_augmentation)
            if augment == "classifier"
            else _augment_pair
        )
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda xy, s: fn(xy[0], xy[1], tf.cast(s, tf.int32) % (2**30)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    if targets is not None:
        ds = ds.map(lambda image, label: (image, one_hot(label, targets, soften)))
    ds = ds.batch(batch_size)
    if targets is not None and soften and targets.mixup > 0:
        seeds = tf.data.Dataset.random(seed=seed + 1).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda xy, s: mix_batch(xy[0], xy[1], tf.cast(s, tf.int32) % (2**30), targets.mixup),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.prefetch(tf.data.AUTOTUNE)


class EpochMetrics(keras.callbacks.Callback):
    """Hands each epoch's logs (loss, accuracy, val_loss, ...) to `log` with a global step.

    `first_step` continues the count across several fits of one model (frozen backbone, then
    fine-tuning), so a tracker draws one curve per metric instead of two overlapping ones.
    The tracker is a plain callable: this module stays free of MLflow.
    """

    def __init__(self, log: Callable[[dict[str, float], int], None], first_step: int = 0) -> None:
        super().__init__()
        self.log, self.first_step = log, first_step

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        values = {k: float(v) for k, v in (logs or {}).items() if np.isfinite(float(v))}
        if values:
            self.log(values, self.first_step + epoch)


def distribution_strategy(
    name: str | None, key: str = "training.distribution"
) -> tf.distribute.Strategy:
    """The tf.distribute strategy to build and fit a model under (`with strategy.scope()`).

    `none`: TensorFlow's default (one device). `mirrored`: one replica per GPU, or per logical
    CPU device where there is no GPU; each step splits the batch across the replicas and
    averages their gradients, so `batch_size` stays the global batch.
    """
    name = "none" if name is None else str(name).lower()
    if name not in DISTRIBUTIONS:
        raise ValueError(f"{key} must be one of {', '.join(DISTRIBUTIONS)}; got {name!r}")
    if name == "none":
        return tf.distribute.get_strategy()
    devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
        d.name for d in tf.config.list_logical_devices("CPU")
    ]
    if len(devices) < 2:
        logger.warning(
            "%s: mirrored, but only one device (%s): training runs on it alone",
            key,
            ", ".join(devices),
        )
    else:
        logger.info("%s: mirrored over %d devices (%s)", key, len(devices), ", ".join(devices))
    return tf.distribute.MirroredStrategy(devices)


def fit(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    name: str,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    loss: str,
    metrics: list[str],
    augment: str | None,
    class_weight: dict[int, float] | None = None,
    patience: int = 3,
    early_stopping_start: int = 0,
    callbacks: list[keras.callbacks.Callback] | None = None,
    shuffle: bool = True,
    progress_interval: float = 15.0,
    lr_schedule: str = "constant",
    stain_augmentation: dict[str, float] | None = None,
    compile_options: dict[str, Any] | None = None,
    targets: SoftTargets | None = None,
) -> TrainingResult:
    """Compile and fit with early stopping on validation loss, restoring the best weights.

    `early_stopping_start`: epochs before early stopping watches at all. A network trained from
    random weights has erratic validation loss at first, and an early lucky epoch (often one
    that predicts the majority class) would otherwise be restored as "best".
    Under a distribution strategy, call it inside `strategy.scope()` (the model too was built
    there): compiling creates the optimizer's variables, which must be mirrored as well.
    `callbacks`: extra Keras callbacks, e.g. `EpochMetrics` for a tracker. `shuffle=False`
    keeps the training order fixed (a distributed iterator shuffles in another order).
    `progress_interval`: seconds between progress lines within an epoch (`ProgressLogger`;
    Keras' own progress bar is off). `lr_schedule`: `constant`, or `cosine` (decay to zero over
    `epochs`, so a short budget still ends on small steps). `stain_augmentation`: HED jitter
    ({sigma, bias}) on top of the classifier augmentation. `compile_options`: extra
    `model.compile` arguments for training only (`steps_per_execution`: several steps per
    call into the graph, the same updates with less Python in between); the returned model
    is compiled without them, so its predictions run one batch per call.
    """
    seeding.set_seed(seed)
    compile_options = dict(compile_options or {})
    if targets is not None and loss == "sparse_categorical_crossentropy":
        loss = "categorical_crossentropy"  # the same loss on one-hot (softened) targets
    rate = learning_schedule(lr_schedule, learning_rate, epochs * -(-len(train[0]) // batch_size))
    key = trainers.structure_key(
        model,
        loss=loss,
        metrics=metrics,
        learning_rate=keras.saving.serialize_keras_object(rate),
        **compile_options,
    )
    trainer, cached = trainers.checkout(model, key)
    fitted = trainer if trainer is not None else model
    if trainer is not None:
        trainers.copy_state(model, trainer)
    if cached:
        trainers.reset_optimizer(trainer.optimizer, rate)
    else:
        _compile(fitted, rate, loss, metrics, compile_options)
    train_ds = make_dataset(
        *train,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        augment=augment,
        stain_augmentation=stain_augmentation,
        targets=targets,
    )
    val_ds = make_dataset(
        *val, batch_size=batch_size, shuffle=False, seed=seed, targets=targets, soften=False
    )
    progress = ProgressLogger(name, epochs, len(train[0]), batch_size, interval=progress_interval)
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss",
            patience=patience,
            restore_best_weights=True,
            start_from_epoch=early_stopping_start,
        ),
        progress,
        *(callbacks or []),
    ]
    start = time.perf_counter()
    history = fitted.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        verbose=0,
        callbacks=callbacks,
        class_weight=class_weight,
        shuffle=False,
    )  # tf.data already shuffles; silences a Keras warning
    seconds = time.perf_counter() - start
    if trainer is not None:
        trainers.copy_state(trainer, model)
        model.compile(optimizer=keras.optimizers.Adam(rate), loss=loss, metrics=metrics)
        trainers.remember(key, trainer)
    epochs_run = len(history.history.get("loss", []))
    # Steady-state throughput: the first epoch also pays for tracing the graph.
    steady = progress.epoch_seconds[1:] or progress.epoch_seconds
    return TrainingResult(
        history={k: [float(v) for v in vals] for k, vals in history.history.items()},
        seconds=seconds,
        patches_per_second=len(train[0]) / max(float(np.median(steady)), 1e-9),
        epochs_run=epochs_run,
    )


def _compile(
    model: keras.Model, rate: Any, loss: str, metrics: list[str], options: dict[str, Any]
) -> None:
    """Adam at `rate`, its variables built now: built inside the first traced step instead,
    they make Keras trace that step twice (~10 s for MobileNetV2 on a laptop CPU)."""
    model.compile(optimizer=keras.optimizers.Adam(rate), loss=loss, metrics=metrics, **options)
    model.optimizer.build(model.trainable_variables)


SCHEDULES = ("constant", "cosine")


def learning_schedule(
    name: str, learning_rate: float, steps: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The optimizer's learning rate: fixed, or cosine-decayed over `steps`."""
    if name not in SCHEDULES:
        raise ValueError(
            f"classification.training.lr_schedule must be one of {', '.join(SCHEDULES)}; "
            f"got {name!r}"
        )
    if name == "constant" or steps <= 0:
        return learning_rate
    return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)


def subsample(
    index: pd.DataFrame, max_rows: int | None, seed: int, stratify: str = "label"
) -> pd.DataFrame:
    """At most `max_rows` rows, stratified by `stratify`, in their original order.

    Neighbouring patches of one image are highly redundant: a stratified sample trains almost
    as well at a fraction of the CPU time. `None` or 0 keeps everything.
    """
    if not max_rows or len(index) <= max_rows:
        return index
    counts = index[stratify].value_counts()
    strata = index[stratify] if counts.min() >= 2 else None
    kept, _ = train_test_split(index, train_size=max_rows, stratify=strata, random_state=seed)
    return kept.sort_index()


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Inverse-frequency weights so a minority class is not ignored (sklearn 'balanced')."""
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    result = dict.fromkeys(range(n_classes), 1.0)
    result.update({int(c): float(w) for c, w in zip(present, weights, strict=True)})
    return result


def predict(model: keras.Model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Batched inference without Keras' per-call overhead on large arrays."""
    if len(x) == 0:
        return np.zeros((0, *model.output_shape[1:]), np.float32)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    return model.predict(ds, verbose=0)
