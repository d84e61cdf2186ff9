"""The project hooks: node timings, a readable name and tags in the active MLflow run, the
experiment described, the git commit read before the input safety hook redacts the path."""

import subprocess
import threading
from datetime import UTC, datetime
from types import SimpleNamespace

import mlflow
import pytest
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline, node
from mlflow import MlflowClient

from ssc_skin import tracking
from ssc_skin.hooks import InputSafetyHook, NodeTimingHook
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
    seconds = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/timing/node_seconds.json")
    assert seconds["step"] >= 0
    assert metrics["time/pipeline_seconds"] >= seconds["step"]
    assert not any(k.startswith("node_seconds") for k in metrics)  # no chart per node
    timeline = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/timing/node_timeline.json")
    start, end, worker = timeline["step"]
    assert 0 <= start <= end <= metrics["time/pipeline_seconds"] + 1e-3  # rounded to ms
    assert end - start == pytest.approx(seconds["step"], abs=1e-2)
    assert worker == threading.current_thread().name


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


def _commit(repo):
    def git(*args):
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=repo,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    git("init", "-q")
    (repo / "a.txt").write_text("1")
    git("add", "a.txt")
    git("commit", "-q", "-m", "one")
    return git("rev-parse", "HEAD")


def test_the_git_commit_is_tagged_although_the_safety_hook_redacts_the_project_path(
    store, tmp_path
):
    # a clean clone: the commit is read from the real path before InputSafetyHook (tryfirst)
    # replaces `project_path` by the folder's bare name
    repo = tmp_path / "MRN-4471-Smith_projects" / "ssc-skin"
    repo.mkdir(parents=True)
    commit = _commit(repo)
    timing, safety = NodeTimingHook(), InputSafetyHook()
    timing.after_context_created(SimpleNamespace(project_path=repo))
    run_params = {**RUN_PARAMS, "project_path": str(repo)}
    safety.before_pipeline_run(run_params, Pipeline([]), DataCatalog())
    assert run_params["project_path"] == "ssc-skin"  # no user folder reaches MLflow
    with mlflow.start_run() as run:
        timing.before_pipeline_run(run_params)
    tags = MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["git_commit"] == commit and tags["git_dirty"] == "false"
    assert tags["mlflow.source.git.commit"] == commit
    assert "MRN-4471" not in str(tags)


def test_the_run_is_named_for_its_pipeline_env_and_date_and_the_experiment_described(store):
    hook = NodeTimingHook()
    with mlflow.start_run(run_name="__default__") as run:
        hook.before_pipeline_run({**RUN_PARAMS, "pipeline_names": ["__default__"]})
    got = MlflowClient().get_run(run.info.run_id)
    assert got.info.run_name.startswith("study · test · 20")
    experiment = MlflowClient().get_experiment(got.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "nested run per task x architecture" in experiment.tags["mlflow.note.content"]


def test_a_description_edited_by_a_person_stays(store):
    with mlflow.start_run() as run:
        client = MlflowClient()
        client.set_experiment_tag(run.info.experiment_id, "mlflow.note.content", "ours")
        NodeTimingHook().before_pipeline_run(RUN_PARAMS)
    tags = MlflowClient().get_experiment(run.info.experiment_id).tags
    assert tags["mlflow.note.content"] == "ours"


@pytest.mark.parametrize(
    "params, name",
    [
        ({"pipeline_names": ["__default__"], "env": None}, "study · local · 2026-12-06 04:30 UTC"),
        ({"pipeline_name": "cv", "env": "test"}, "cv · test · 2026-12-06 04:30 UTC"),
        (
            {"pipeline_names": ["export", "registry"], "env": "paper"},
            "export+registry · paper · 2026-12-06 04:30 UTC",
        ),
    ],
)
def test_run_name(params, name):
    assert tracking.run_name(params, datetime(2026, 12, 6, 4, 30, tzinfo=UTC)) == name
