"""Project hooks.

- `NodeTimingHook`: wall time of every node, and readable tags, logged to the active MLflow run.
- `InputSafetyHook`, for the input side: one configuration check before any work, and no
  user path in MLflow.

  - `before_pipeline_run` validates every parameter the input side reads
    (`cohort.config.validate_parameters`) and stops the run with one message naming each bad
    key, before kedro-mlflow opens a run or any node reads a file. The cohort's folder or
    manifest must exist only when the run reads it (the `ingest_cohort` node is in it).
  - kedro-mlflow logs the `params:` inputs of each node in its own `before_node_run`. This
    hook runs first (`tryfirst`) and replaces user paths (`cohort.source.root`, `.manifest`,
    `predict.input`, any absolute path) by a keyed hash in the dictionary the hooks share.
    Kedro hands hooks a copy of the node's inputs, so the node itself still gets the real
    paths; the hook returns nothing, which leaves the inputs as they are. The run's
    `runtime_params` tag (from `--params`) and `project_path` are redacted the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import PurePath
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.pipeline import Node, Pipeline

from ssc_skin import tracking
from ssc_skin.cohort.config import validate_parameters
from ssc_skin.cohort.privacy import pseudonym_key, redact_params

logger = logging.getLogger(__name__)

READS_COHORT = "ingest_cohort"  # the node whose run needs the cohort's files to exist


class NodeTimingHook:
    """Time every node and the run; name, tag and describe the run for the people who read it.

    - The git commit is read in `after_context_created`, from the real project path, before
      `InputSafetyHook` replaces `project_path` by the folder's bare name.
    - kedro-mlflow opens the run in its own `before_pipeline_run`; `trylast` puts ours after
      it: the run gets a name (`<pipeline> · <env> · <date>`, not `__default__`), readable
      tags (runner class, env, commit) and the experiment a description and the kind that
      opens MLflow's model-training view. Where no run is active yet, the tags go in at the
      first node instead.
    - Node times go to one artifact (`timing/node_seconds.json`, rewritten after each node) and
      the metric `time/pipeline_seconds`: the parent run's charts stay the study's numbers.
      `timing/node_timeline.json` adds when each node started and ended (seconds from the
      pipeline's start) and on which worker: with two nodes at a time, it shows where a core
      sat idle.
    """

    def __init__(self) -> None:
        self._starts: dict[str, float] = {}
        self._pipeline_start = 0.0
        self._pending_tags: dict[str, str] = {}
        self._git: dict[str, str] = {}
        self._node_seconds: dict[str, float] = {}
        self._timeline: dict[str, list[Any]] = {}
        self._lock = threading.Lock()

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._git = tracking.git_state(getattr(context, "project_path", None))

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        self._pipeline_start = time.perf_counter()
        self._node_seconds = {}
        self._timeline = {}
        self._pending_tags = {
            **tracking.run_tags(run_params, git=self._git or None),
            "mlflow.runName": tracking.run_name(run_params),
        }
        self._flush_tags()

    @hook_impl
    def before_node_run(self, node: Node) -> None:
        self._flush_tags()
        self._starts[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Node) -> None:
        end = time.perf_counter()
        start = self._starts.pop(node.name, end)
        seconds = end - start
        logger.info("Node %s took %.1f s", node.name, seconds)
        with self._lock:  # nodes end in two threads under the fold-parallel runner
            self._node_seconds[node.name] = round(seconds, 3)
            self._timeline[node.name] = [
                round(start - self._pipeline_start, 3),
                round(end - self._pipeline_start, 3),
                threading.current_thread().name,
            ]
            tracking.log_node_seconds(
                dict(self._node_seconds), end - self._pipeline_start, dict(self._timeline)
            )

    def _flush_tags(self) -> None:
        if self._pending_tags and tracking.is_tracking():
            tracking.tag_run(self._pending_tags)
            self._pending_tags = {}


class InputSafetyHook:
    """Validate the configuration up front; keep user paths out of MLflow parameters."""

    @hook_impl(tryfirst=True)
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any
    ) -> None:
        params = catalog.load("parameters") if "parameters" in catalog else {}
        reads_cohort = any(node.name == READS_COHORT for node in pipeline.nodes)
        validate_parameters(params, check_paths=reads_cohort)
        key = pseudonym_key()
        if run_params.get("runtime_params"):
            run_params["runtime_params"] = redact_params(run_params["runtime_params"], key)
        if run_params.get("project_path"):
            run_params["project_path"] = PurePath(str(run_params["project_path"])).name

    @hook_impl(tryfirst=True)
    def before_node_run(self, node: Node, inputs: dict[str, Any]) -> None:
        key = pseudonym_key()
        for name in list(inputs):
            if name == "parameters":
                inputs[name] = redact_params(inputs[name], key)
            elif name.startswith("params:"):
                inputs[name] = redact_params(inputs[name], key, f"{name[7:]}.")
