"""MLflow as users compare runs: one nested run per model spanning its training, per-epoch
history, models named `<task>.<arch>`, evaluation added later without stretching the run."""

import subprocess

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from ssc_skin import tracking
from ssc_skin.pipelines.classification.nodes import train_classifier
from ssc_skin.pipelines.evaluation.nodes import log_model_run
from tests.helpers import sqlite_tracking

TASK = {
    "name": "binary",
    "classes": ["normal", "ssc"],
    "label_map": {"normal": "normal", "early": "ssc", "late": "ssc"},
}
CNN = {
    "name": "cnn",
    "input_size": 16,
    "options": {"filters": [4], "dense_units": 4, "dropout": 0.0},
}
TRAINING = {
    "epochs": 3,
    "batch_size": 8,
    "learning_rate": 0.01,
    "patience": 5,
    "seed": 0,
    "frozen_epochs": 0,
    "max_train_patches": None,
}


def _patches(n_per_split: int = 8):
    rng = np.random.default_rng(0)
    rows = []
    for split in ("train", "val", "test"):
        for i in range(n_per_split):
            rows.append(
                {
                    "split": split,
                    "label": ["normal", "late"][i % 2],
                    "image": f"{split}{i}",
                    "patient": f"{split}{i % 4}",
                }
            )
    index = pd.DataFrame(rows)
    index["row"] = np.arange(len(index))
    images = rng.integers(0, 255, (len(index), 16, 16, 3)).astype(np.uint8)
    return {"images": images}, index


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with sqlite_tracking(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


@pytest.fixture(scope="module")
def trained(store):
    """train_classifier, then log_model_run, inside one parent run (as kedro-mlflow opens it)."""
    patches, index = _patches()
    with mlflow.start_run(run_name="__default__") as parent:
        model, summary = train_classifier(patches, index, TASK, CNN, TRAINING)
        client = MlflowClient()
        after_training = client.get_run(summary["mlflow_run_id"])
        evaluation = {
            **{k: v for k, v in summary.items() if k != "history"},
            "test_patient_accuracy": 0.75,
            "test_patient_accuracy_ci_low": 0.3,
            "test_patient_accuracy_ci_high": 0.95,
            "test_patients": 4,
            "val_patient_balanced_accuracy": 0.5,
        }
        log_model_run(evaluation, CNN, model)
        after_evaluation = client.get_run(summary["mlflow_run_id"])
    return parent.info.run_id, summary, after_training, after_evaluation


def test_without_an_active_run_nothing_is_tracked(store):
    patches, index = _patches()
    before = len(mlflow.search_runs(search_all_experiments=True))
    _, summary = train_classifier(
        patches, index, TASK, {**CNN, "input_size": 16}, {**TRAINING, "epochs": 1}
    )
    assert summary["mlflow_run_id"] is None and summary["model_uri"] is None
    assert len(mlflow.search_runs(search_all_experiments=True)) == before


def test_the_nested_run_is_a_child_named_after_the_model_and_spans_its_training(trained):
    parent_id, summary, run, _ = trained
    assert run.info.run_name == "binary.cnn"
    assert run.data.tags["mlflow.parentRunId"] == parent_id
    assert run.info.status == "FINISHED"
    # opened before the model was built, closed after fitting: at least the training time
    assert run.info.end_time - run.info.start_time >= summary["train_seconds"] * 1000
    assert run.data.params["architecture"] == "cnn"
    assert run.data.params["training.epochs"] == "3"


def test_each_epochs_loss_and_accuracy_are_logged_with_their_step(trained):
    _, summary, run, _ = trained
    client = MlflowClient()
    for key, name in [
        ("loss", "train/loss"),
        ("accuracy", "train/accuracy"),
        ("val_loss", "val/loss"),
        ("val_accuracy", "val/accuracy"),
    ]:
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == list(range(summary["epochs_run"])), name
        assert [m.value for m in history] == pytest.approx(summary["history"][key])


def test_the_logged_model_is_named_after_task_and_architecture(trained):
    # MLflow forbids '.' in logged model names: binary_cnn, like the export's predictors
    _, summary, run, _ = trained
    assert summary["model_uri"].startswith("models:/m-")
    model = mlflow.get_logged_model(summary["model_uri"].removeprefix("models:/"))
    assert model.name == "binary_cnn" and model.source_run_id == run.info.run_id
    assert run.data.tags["model_uri"] == summary["model_uri"]


def test_the_evaluation_reopens_the_run_and_keeps_its_training_duration(trained):
    parent_id, _, run, evaluated = trained
    assert evaluated.info.end_time == run.info.end_time
    assert evaluated.info.status == "FINISHED"
    assert evaluated.data.metrics["test/patient_accuracy"] == 0.75
    assert "test/patient_accuracy" not in run.data.metrics
    note = evaluated.data.tags[tracking.NOTE_TAG]
    assert "binary.cnn" in note and "0.750 [0.300, 0.950]" in note and "4 test patients" in note
    children = MlflowClient().search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert [c.info.run_id for c in children] == [run.info.run_id]  # no second run per model


def test_a_nested_runs_metrics_are_grouped_by_split_and_static_values_are_params(trained):
    # one chart section per split in MLflow, and no one-bar chart for a size or a count
    _, summary, _, evaluated = trained
    metrics, params = evaluated.data.metrics, evaluated.data.params
    assert metrics and all(k.split("/")[0] in {"train", "val", "test"} for k in metrics), metrics
    assert {"train/loss", "val/accuracy", "train/seconds", "test/patient_accuracy"} <= set(metrics)
    for static in ("input_size", "parameters", "replicas", "epochs_run", "test_patients"):
        assert static not in metrics and not any(k.endswith(static) for k in metrics), static
        assert static in params, static
    assert params["parameters"] == str(summary["parameters"])
    everything = mlflow.artifacts.load_dict(f"{evaluated.info.artifact_uri}/evaluation.json")
    assert everything["test_patient_accuracy"] == 0.75 and everything["test_patients"] == 4


def test_split_evaluation_groups_measurements_and_keeps_settings_as_params():
    metrics, params = tracking.split_evaluation(
        {
            "task": "binary",
            "classes": ["normal", "ssc"],
            "test_patient_sensitivity_ssc": 0.5,  # per class: in evaluation.json, no chart
            "test_patient_sensitivity_ssc_all": 0.5,
            "test_patient_screen_sensitivity_youden": 0.6,
            "train_patch_auc": 0.99,  # training-split detail: no chart
            "train_patient_accuracy": 1.0,
            "test_patient_accuracy": 0.8,
            "val_patch_auc": 0.7,
            "train_seconds": 1.5,
            "patches_per_second": 100.0,
            "test_patient_auc_ci_low": float("nan"),
            "input_size": 64,
            "test_patients": 9,
            "C": 0.1,
            "every_patient_tested_once": True,
        }
    )
    assert metrics == {
        "test/patient_screen_sensitivity_youden": 0.6,
        "train/patient_accuracy": 1.0,
        "test/patient_accuracy": 0.8,
        "val/patch_auc": 0.7,
        "train/seconds": 1.5,
        "train/patches_per_second": 100.0,
    }
    assert params == {"input_size": "64", "test_patients": "9", "C": "0.1"}


def test_the_evaluation_metrics_are_linked_to_the_logged_model(trained):
    _, summary, _, _ = trained
    model = mlflow.get_logged_model(summary["model_uri"].removeprefix("models:/"))
    assert "test/patient_accuracy" in {m.key for m in model.metrics}


def test_an_unknown_run_id_gets_a_new_nested_run_with_the_model(trained):
    parent_id, summary, _, _ = trained
    patches, index = _patches()
    model, _ = train_classifier(patches, index, TASK, CNN, {**TRAINING, "epochs": 1})
    with mlflow.start_run(run_id=parent_id):
        log_model_run(
            {**summary, "mlflow_run_id": "0" * 32, "model_uri": None, "test_patient_accuracy": 0.5},
            CNN,
            model,
        )
    children = MlflowClient().search_runs(
        ["0"], f"tags.mlflow.parentRunId = '{parent_id}'", order_by=["attributes.start_time DESC"]
    )
    assert len(children) == 2
    newest = children[0]
    assert (
        newest.info.run_name == "binary.cnn" and newest.data.metrics["test/patient_accuracy"] == 0.5
    )
    assert newest.data.tags["model_uri"].startswith("models:/m-")


def test_a_skipped_model_logs_nothing(store):
    with mlflow.start_run() as parent:
        log_model_run(
            {"task": "three_class", "architecture": "cnn", "skipped": "binary cohort"}, CNN, None
        )
    children = MlflowClient().search_runs(
        ["0"], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert children == []


@pytest.mark.parametrize(
    "runner, name",
    [
        (
            "<kedro.runner.sequential_runner.SequentialRunner object at 0x7f3a2c1d0e50>",
            "SequentialRunner",
        ),
        ("<kedro.runner.parallel_runner.ParallelRunner object at 0xABC>", "ParallelRunner"),
        ("ThreadRunner", "ThreadRunner"),
        ("kedro.runner.ThreadRunner", "ThreadRunner"),
        (None, ""),
    ],
)
def test_runner_name_is_the_class_name_not_a_repr(runner, name):
    assert tracking.runner_name(runner) == name


def test_runner_name_of_an_object_or_a_class():
    class MyRunner:
        pass

    assert tracking.runner_name(MyRunner()) == "MyRunner"
    assert tracking.runner_name(MyRunner) == "MyRunner"


def _git(repo, *args):
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def test_run_tags_name_the_commit_the_env_and_whether_files_changed(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("1")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-q", "-m", "one")
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.strip()
    tags = tracking.run_tags(
        {
            "runner": "<kedro.runner.sequential_runner.SequentialRunner object at 0x1>",
            "env": "test",
            "project_path": str(tmp_path),
        }
    )
    assert tags == {
        "runner": "SequentialRunner",
        "config_env": "test",
        "git_commit": commit,
        "git_dirty": "false",
        "mlflow.source.git.commit": commit,
    }
    (tmp_path / "a.txt").write_text("2")
    assert tracking.run_tags({"project_path": str(tmp_path)})["git_dirty"] == "true"


def test_run_tags_outside_git_default_the_env_to_local(tmp_path):
    tags = tracking.run_tags({"runner": None, "env": None, "project_path": str(tmp_path)})
    assert tags == {"runner": "SequentialRunner", "config_env": "local"}
