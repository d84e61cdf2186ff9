"""Keras' random state is one per process: seed it and build from it under one lock.

Why a lock: the default run trains two models at once in two threads (`ssc_skin.runner`). A
model's initial weights come from the global seed at the moment it is built; without the lock,
one thread's seeding could land between another's seeding and its build, and its weights would
depend on the timing of the other fit.

Why not `keras.utils.set_random_seed` every time: it calls `tf.random.set_seed`, and TensorFlow
then clears its eager kernel cache (`TFE_ContextClearCaches`), which holds every compiled
function. The next call of a traced training step re-instantiates and re-optimises its whole
graph: 8-12 s for MobileNetV2 on one core, paid at the start of every fit, and, with two fits
in two threads, again by a running fit each time the other thread seeded. TensorFlow's global
seed is therefore set only when it changes (the study uses one seed); the seeds Keras draws
from (its global seed generator, NumPy, Python) are reset every time, as before. Every random
op of this project's training takes an explicit seed (tf.data shuffles and augmentation
streams, Keras' seed generators), so TensorFlow's op-seed counter, which the skipped call
would also reset, decides nothing here (`tests/models/test_seeding.py`).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import keras
import numpy as np
import tensorflow as tf

RNG_LOCK = threading.RLock()

try:  # Keras' own global seed state (what `keras.utils.set_random_seed` writes)
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED
    from tensorflow.python.eager import context as tf_context
except ImportError:  # pragma: no cover - another Keras/TF layout: seed the slow, public way
    global_state = None


def _seed_keras_numpy_python(seed: int) -> None:
    """`keras.utils.set_random_seed` without its TensorFlow call."""
    global_state.set_global_attribute(GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)


def seed_everything(seed: int) -> None:
    """What `keras.utils.set_random_seed(seed)` seeds, without clearing TensorFlow's compiled
    functions when TensorFlow's global seed already is `seed`."""
    if global_state is None:
        keras.utils.set_random_seed(seed)
        return
    _seed_keras_numpy_python(seed)
    if tf_context.global_seed() != seed:
        tf.random.set_seed(seed)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed Keras, NumPy and Python's `random` and keep other threads from reseeding for the
    block (build a model inside it: its initial weights then depend on `seed` alone)."""
    with RNG_LOCK:
        seed_everything(seed)
        yield


def set_seed(seed: int) -> None:
    """`seed_everything`, never in the middle of another thread's seeded block."""
    with seeded(seed):
        pass
