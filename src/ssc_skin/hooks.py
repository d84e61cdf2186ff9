"""Project hooks: wall time of every node, logged to the active MLflow run."""

from __future__ import annotations

import logging
import time
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl
from kedro.pipeline import Node

logger = logging.getLogger(__name__)


class NodeTimingHook:
    """Log `node_seconds.<node name>` for each node and `pipeline_seconds` for the run.

    kedro-mlflow opens the run before the pipeline starts, so an active run exists here.
    """

    def __init__(self) -> None:
        self._starts: dict[str, float] = {}
        self._pipeline_start = 0.0

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        self._pipeline_start = time.perf_counter()

    @hook_impl
    def before_node_run(self, node: Node) -> None:
        self._starts[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Node) -> None:
        seconds = time.perf_counter() - self._starts.pop(node.name, time.perf_counter())
        logger.info("Node %s took %.1f s", node.name, seconds)
        if mlflow.active_run() is not None:
            mlflow.log_metric(f"node_seconds.{node.name}", seconds)
            mlflow.log_metric("pipeline_seconds", time.perf_counter() - self._pipeline_start)
