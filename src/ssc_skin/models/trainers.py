"""Reuse one compiled copy of a network across fits of the same structure.

Why: a Keras fit traces its training step into a TensorFlow graph the first time it runs. For
MobileNetV2 that tracing costs 15-25 s on a laptop CPU, longer than the training itself at the
default recipe, and the default study fits the same network 12 times (5 folds + the final fit,
2 tasks). A cached *trainer* keeps its traced graph; each fit starts it from the freshly built
model's own weights, seed states and a zeroed optimizer, so the result does not depend on what
was fitted before (a test checks a cached fit equals a fresh one).

The caller's model is never aliased: the trainer is a clone, and the fitted weights are copied
back into the model the caller built.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from typing import Any

import keras
import tensorflow as tf

logger = logging.getLogger(__name__)

MAX_TRAINERS = 8
# Trainers not in use, per structure key. A fit checks one out and gives it back when done, so
# two fits at once (the fold-parallel runner's threads) never share one trainer's variables.
_TRAINERS: OrderedDict[str, list[keras.Model]] = OrderedDict()
_LOCK = threading.Lock()


def state_variables(model: keras.Model) -> list[keras.Variable]:
    """Every variable that decides what a fit does: weights (trainable first), then each
    layer's random-seed state (dropout, augmentation), in a fixed order."""
    seeds = [
        generator.state
        for layer in model._flatten_layers(include_self=True)
        for generator in getattr(layer, "_seed_generators", [])
    ]
    return [*model.weights, *seeds]


def structure_key(model: keras.Model, **compile_settings: Any) -> str:
    """Same key <=> same layers, wiring, configs, trainable flags and compile settings.

    Layer names are replaced by their position: Keras numbers auto-named layers per process
    (`dense_3`), so two builds of the same network differ only there.
    """
    layers = list(model._flatten_layers(include_self=True))
    positions = {layer.name: f"#{i}" for i, layer in enumerate(layers)}
    config = _renamed(model.get_config(), positions)
    trainable = [bool(layer.trainable) for layer in layers]
    shapes = [list(v.shape) for v in state_variables(model)]
    payload = [type(model).__name__, config, trainable, shapes, compile_settings]
    return json.dumps(payload, sort_keys=True, default=str)


def _renamed(value: Any, positions: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _renamed(v, positions) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_renamed(v, positions) for v in value]
    if isinstance(value, str):
        return positions.get(value, value)
    return value


def copy_state(source: keras.Model, target: keras.Model) -> None:
    """Assign every state variable of `source` to the matching one of `target`."""
    for src, dst in zip(state_variables(source), state_variables(target), strict=True):
        dst.assign(src)


def reset_optimizer(optimizer: keras.optimizers.Optimizer, learning_rate: Any) -> None:
    """The optimizer as freshly built: step 0, zero moments, the given learning rate."""
    for variable in optimizer.variables:
        if variable is getattr(optimizer, "_learning_rate", None):
            variable.assign(learning_rate)
        else:
            variable.assign(tf.zeros_like(variable))


def checkout(model: keras.Model, key: str) -> tuple[keras.Model | None, bool]:
    """(trainer, cached): a cached trainer for `key`, now the caller's alone until it gives it
    back (`remember`), or a new clone of `model`.

    Returns (None, False) where a trainer cannot be made (a distribution strategy is active,
    or the model cannot be cloned): the caller then fits its own model as before.
    """
    if tf.distribute.has_strategy():
        return None, False
    with _LOCK:
        idle = _TRAINERS.get(key)
        if idle:
            trainer = idle.pop()
            if not idle:
                del _TRAINERS[key]
            return trainer, True
    try:
        trainer = keras.models.clone_model(model)
    except Exception as error:  # noqa: BLE001 - any model Keras cannot clone is fitted directly
        logger.debug("no cached trainer for %s: %s", model.name, error)
        return None, False
    for layer, clone in zip(
        model._flatten_layers(include_self=False),
        trainer._flatten_layers(include_self=False),
        strict=False,
    ):
        clone.trainable = layer.trainable
    shapes = [tuple(v.shape) for v in state_variables(model)]
    if shapes != [tuple(v.shape) for v in state_variables(trainer)]:
        return None, False
    return trainer, False


def remember(key: str, trainer: keras.Model) -> None:
    """Give `trainer` back for later fits of the same structure (at most MAX_TRAINERS
    structures, the least recently used forgotten first)."""
    with _LOCK:
        _TRAINERS.setdefault(key, []).append(trainer)
        _TRAINERS.move_to_end(key)
        while len(_TRAINERS) > MAX_TRAINERS:
            _TRAINERS.popitem(last=False)


def clear() -> None:
    """Forget every cached trainer (tests; a long-lived process that wants its memory back)."""
    with _LOCK:
        _TRAINERS.clear()
