"""Project hooks for the input side: one configuration check before any work, and no user
path in MLflow.

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

from pathlib import PurePath
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.pipeline import Node, Pipeline

from ssc_skin.cohort.config import validate_parameters
from ssc_skin.cohort.privacy import pseudonym_key, redact_params

READS_COHORT = "ingest_cohort"  # the node whose run needs the cohort's files to exist


class InputSafetyHook:
    """Validate the configuration up front; keep user paths out of MLflow parameters."""

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline,
                            catalog: Any) -> None:
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
