"""Project hooks: wall time of every node, and readable tags, logged to the active MLflow run."""

from __future__ import annotations

import logging
import time
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl
from kedro.pipeline import Node

from ssc_skin import tracking

logger = logging.getLogger(__name__)


class NodeTimingHook:
    """Log `node_seconds.<node name>` for each node and `pipeline_seconds` for the run, and tag
    the run with what people filter by: runner class name (kedro-mlflow's `runner` tag is the
    object's repr), configuration env, git commit.

    kedro-mlflow opens the run in its own `before_pipeline_run`; `trylast` puts ours after it.
    Where no run is active yet, the tags go in at the first node instead.
    """

    def __init__(self) -> None:
        self._starts: dict[str, float] = {}
        self._pipeline_start = 0.0
        self._pending_tags: dict[str, str] = {}

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        self._pipeline_start = time.perf_counter()
        self._pending_tags = tracking.run_tags(run_params)
        self._flush_tags()

    @hook_impl
    def before_node_run(self, node: Node) -> None:
        self._flush_tags()
        self._starts[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Node) -> None:
        seconds = time.perf_counter() - self._starts.pop(node.name, time.perf_counter())
        logger.info("Node %s took %.1f s", node.name, seconds)
        if mlflow.active_run() is not None:
            mlflow.log_metric(f"node_seconds.{node.name}", seconds)
            mlflow.log_metric("pipeline_seconds", time.perf_counter() - self._pipeline_start)

    def _flush_tags(self) -> None:
        if self._pending_tags and mlflow.active_run() is not None:
            mlflow.set_tags(self._pending_tags)
            self._pending_tags = {}
