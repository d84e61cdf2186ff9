"""Progress of the cross-validation in the log: one line per finished fold, with an ETA.

A 5-fold study runs for minutes with hundreds of nodes; Kedro's "Completed 212 out of 371
tasks" says little about when it ends. Folds are alike, so the time of the folds done so far
predicts the rest: `FoldProgress` counts each fold's nodes (its `fold_<k>` namespace) and logs
`Cross-validation: fold 3/5 done · 4m10s elapsed · ETA 2m50s for the other folds` when a
fold's last node ends. One line per fold: it never floods a CI log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)


def fold_of(namespace: str | None) -> str | None:
    """`fold_3` for a node of namespace `fold_3.binary.cnn`; None outside the folds."""
    first = (namespace or "").split(".")[0]
    return first if first.startswith("fold_") else None


def duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


class FoldProgress:
    """Kedro hook: a log line with elapsed time and ETA each time a fold's nodes are done."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.remaining: Counter[str] = Counter()
        self.folds = 0
        self.done = 0
        self.start = 0.0
        self.lock = threading.Lock()

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any) -> None:
        self.remaining = Counter(
            fold for n in pipeline.nodes if (fold := fold_of(n.namespace)) is not None
        )
        self.folds, self.done, self.start = len(self.remaining), 0, self.clock()

    @hook_impl
    def after_node_run(self, node: Any) -> None:
        fold = fold_of(node.namespace)
        with self.lock:  # the fold-parallel runner ends nodes in two threads
            if fold is None or fold not in self.remaining:
                return
            self.remaining[fold] -= 1
            if self.remaining[fold] > 0:
                return
            del self.remaining[fold]
            self.done += 1
            elapsed = self.clock() - self.start
            left = self.folds - self.done
        eta = (
            f"ETA {duration(elapsed / self.done * left)} for the other folds"
            if left
            else "all folds done"
        )
        logger.info(
            "Cross-validation: %s done (%d/%d) · %s elapsed · %s",
            fold,
            self.done,
            self.folds,
            duration(elapsed),
            eta,
        )
