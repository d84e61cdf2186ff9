"""The project hook: node timings and readable tags in the active MLflow run."""

import mlflow
import pytest
from kedro.pipeline import node
from mlflow import MlflowClient

from ssc_skin.hooks import NodeTimingHook
from tests.helpers import sqlite_tracking

RUN_PARAMS = {
    "runner": "<kedro.runner.sequential_runner.SequentialRunner object at 0x7f0>",
    "env": "test",
    "project_path": "/nonexistent/ssc-skin",
}


def _identity(x):
    return x


@pytest.fixture
def store(tmp_path):
    with sqlite_tracking(tmp_path) as uri:
        yield uri


def test_nodes_are_timed_into_the_active_run(store):
    hook, step = NodeTimingHook(), node(_identity, "a", "b", name="step")
    with mlflow.start_run() as run:
        hook.before_pipeline_run(RUN_PARAMS)
        hook.before_node_run(step)
        hook.after_node_run(step)
    metrics = MlflowClient().get_run(run.info.run_id).data.metrics
    assert metrics["node_seconds.step"] >= 0
    assert metrics["pipeline_seconds"] >= metrics["node_seconds.step"]


def test_the_run_gets_the_runner_class_name_and_the_config_env(store):
    hook = NodeTimingHook()
    with mlflow.start_run() as run:
        mlflow.set_tag("runner", RUN_PARAMS["runner"])  # what kedro-mlflow writes first
        hook.before_pipeline_run(RUN_PARAMS)
    tags = MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["runner"] == "SequentialRunner" and tags["config_env"] == "test"


def test_tags_wait_for_a_run_that_opens_after_the_pipeline_starts(store):
    hook, step = NodeTimingHook(), node(_identity, "a", "b", name="step")
    hook.before_pipeline_run(RUN_PARAMS)  # no run yet: nothing to tag, no error
    with mlflow.start_run() as run:
        hook.before_node_run(step)
        hook.after_node_run(step)
    tags = MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["runner"] == "SequentialRunner"


def test_without_a_run_the_hook_only_logs(caplog):
    assert mlflow.active_run() is None
    hook, step = NodeTimingHook(), node(_identity, "a", "b", name="step")
    hook.before_pipeline_run({"runner": None, "env": None, "project_path": None})
    hook.before_node_run(step)
    with caplog.at_level("INFO", logger="ssc_skin.hooks"):
        hook.after_node_run(step)
    assert "Node step took" in caplog.text
    assert mlflow.active_run() is None
