"""Keras' random state is one per process: seed it and build from it under one lock.

Why: the default run trains two models at once in two threads (`ssc_skin.runner`). A model's
initial weights come from the global seed at the moment it is built; without the lock, one
thread's seeding could land between another's seeding and its build, and its weights would
depend on the timing of the other fit.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import keras

RNG_LOCK = threading.RLock()


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed Keras, NumPy and Python's `random` and keep other threads from reseeding for the
    block (build a model inside it: its initial weights then depend on `seed` alone)."""
    with RNG_LOCK:
        keras.utils.set_random_seed(seed)
        yield


def set_seed(seed: int) -> None:
    """`keras.utils.set_random_seed`, never in the middle of another thread's seeded block."""
    with seeded(seed):
        pass
