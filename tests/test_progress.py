"""One log line per finished fold, with elapsed time and an ETA from the folds done so far."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from ssc_skin.progress import FoldProgress, duration, fold_of


def _node(namespace: str | None) -> SimpleNamespace:
    return SimpleNamespace(namespace=namespace)


def test_each_finished_fold_logs_once_with_an_eta(caplog):
    now = [0.0]
    hook = FoldProgress(clock=lambda: now[0])
    nodes = [_node(f"fold_{k}.binary.cnn") for k in range(3) for _ in range(2)] + [_node(None)]
    hook.before_pipeline_run({}, SimpleNamespace(nodes=nodes))
    caplog.set_level(logging.INFO, logger="ssc_skin.progress")
    for k in range(3):
        for i in range(2):
            now[0] += 30.0
            hook.after_node_run(_node(f"fold_{k}.binary.cnn"))
            assert len(caplog.records) == k + (i == 1)  # only when a fold's last node ends
    hook.after_node_run(_node(None))  # the final fit is no fold
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == (
        "Cross-validation: fold_0 done (1/3) · 1m00s elapsed · ETA 2m00s for the other folds"
    )
    assert messages[-1].endswith("(3/3) · 3m00s elapsed · all folds done")


def test_fold_names_and_durations():
    assert fold_of("fold_12.three_class.hybrid") == "fold_12"
    assert fold_of("binary.cnn") is None and fold_of(None) is None
    assert duration(59.6) == "1m00s" and duration(7) == "7s"
