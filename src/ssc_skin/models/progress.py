"""Rate-limited training progress with an ETA, through `logging` (Keras' own bar stays off).

A line at most every `interval` seconds within an epoch, and one at the end of each epoch:

    classifier.cnn epoch 3/30 · 120/310 batches · 410 patches/s · ETA 1m20s

so a long fit shows where it is without flooding a CI log with a progress bar per batch.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import keras

logger = logging.getLogger("ssc_skin.models.training")


def format_duration(seconds: float) -> str:
    """`45s`, `1m20s`, `2h05m`: short enough for a log line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class ProgressLogger(keras.callbacks.Callback):
    """Logs progress at most every `interval` seconds and at each epoch's end; times epochs.

    `samples`: training patches per epoch and `batch_size`, for the batch count and
    patches/s (Keras does not always know the steps of a tf.data pipeline). The ETA
    extrapolates the current epoch's batch rate, and for later epochs the mean duration of
    finished ones (which includes validation). Early stopping can only make it shorter.
    `clock` is injectable for tests.
    """

    def __init__(
        self,
        name: str,
        epochs: int,
        samples: int,
        batch_size: int,
        interval: float = 15.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__()
        self.name, self.epochs, self.samples = name, epochs, samples
        self.batch_size, self.interval, self.clock = batch_size, interval, clock
        self.steps = max(1, math.ceil(samples / max(1, batch_size)))
        self.epoch_seconds: list[float] = []
        self._epoch, self._start, self._last = 0, 0.0, 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self._epoch = epoch
        self._start = self._last = self.clock()

    def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        now = self.clock()
        if now - self._last < self.interval or (self._epoch == 0 and batch == 0):
            return  # the very first batch also traces the graph: its rate says nothing
        self._last = now
        logger.info("%s", self.line(batch + 1, now - self._start))

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        seconds = self.clock() - self._start
        self.epoch_seconds.append(seconds)
        shown = ", ".join(f"{k}={float(v):.4f}" for k, v in (logs or {}).items())
        logger.info("%s (%.1f s): %s", self.line(self.steps, seconds), seconds, shown)

    def line(self, done: int, elapsed: float) -> str:
        """The progress line after `done` batches of the current epoch, `elapsed` s into it."""
        done = min(max(done, 1), self.steps)
        per_batch = max(elapsed, 1e-9) / done
        rate = min(done * self.batch_size, self.samples) / max(elapsed, 1e-9)
        later = self.epochs - self._epoch - 1
        finished = self.epoch_seconds[: self._epoch] if done < self.steps else self.epoch_seconds
        steady = finished[1:] or finished  # the first epoch also paid for tracing
        per_epoch = sum(steady) / len(steady) if steady else self.steps * per_batch
        eta = (self.steps - done) * per_batch + later * per_epoch
        return (
            f"{self.name} epoch {self._epoch + 1}/{self.epochs} · {done}/{self.steps} batches"
            f" · {rate:.0f} patches/s · ETA {format_duration(eta)}"
        )
