"""The input hook: one configuration check before any node runs, and MLflow parameters
without user paths (read back from a real MLflow store, logged by kedro-mlflow's own hook)."""

from pathlib import Path

import mlflow
import pytest
import yaml
from kedro.framework.hooks.manager import _create_hook_manager
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner
from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook
from mlflow.tracking import MlflowClient

from ssc_skin.cohort.ingest import CohortConfigError
from ssc_skin.hooks import InputSafetyHook
from ssc_skin.pipelines.cohort import create_pipeline as cohort_pipeline

PROJECT = Path(__file__).resolve().parents[3]
USER_ROOT = "/home/ann/biopsies/SMITH07_cohort"
PARAMS = {
    "cohort": {
        "source": {
            "layout": "folder",
            "root": USER_ROOT,
            "manifest": "/home/ann/biopsies/manifest.csv",
        },
        "checks": {"min_tissue_fraction": 0.05, "allowed_labels": ["normal", "ssc"]},
        "split": {"val_fraction": 0.25, "test_fraction": 0.25, "seed": 1},
    },
    "predict": {"input": "/home/ann/new/SMITH07_a.png", "patient_ids": True},
}


def _catalog(params: dict) -> DataCatalog:
    catalog = DataCatalog({"parameters": MemoryDataset(params)})
    for key, value in (("params:cohort", params["cohort"]), ("params:predict", params["predict"])):
        catalog[key] = value
    return catalog


def _run_params(**extra) -> dict:
    return {"project_path": "/home/ann/ssc-skin", "runtime_params": {}, **extra}


def test_bad_configuration_stops_before_any_node_with_every_key_named():
    params = {
        **PARAMS,
        "cohort": {
            **PARAMS["cohort"],
            "checks": {"min_tissue_fraction": 1.5, "allowed_labels": ["normal"]},
            "split": {"val_fraction": 0.5, "test_fraction": 0.6},
        },
    }
    with pytest.raises(CohortConfigError) as caught:
        InputSafetyHook().before_pipeline_run(_run_params(), cohort_pipeline(), _catalog(params))
    message = str(caught.value)
    assert "cohort.checks.min_tissue_fraction" in message
    assert "cohort.split.test_fraction" in message  # 0.5 + 0.6: found before ingestion
    assert "cohort.source.root is not a folder (SMITH07_cohort)" not in message  # one pass:
    # paths are checked once the values are right


def test_the_cohort_folder_must_exist_only_for_runs_that_read_it(tmp_path):
    hook = InputSafetyHook()
    with pytest.raises(
        CohortConfigError,
        match=r"cohort.source.root is not a folder "
        r"\(SMITH07_cohort\)",
    ):
        hook.before_pipeline_run(_run_params(), cohort_pipeline(), _catalog(PARAMS))
    other = Pipeline([node(lambda p: p, "params:predict", "out", name="predict_only")])
    hook.before_pipeline_run(_run_params(), other, _catalog(PARAMS))  # no cohort read: fine


def test_runtime_params_and_project_path_are_redacted_for_the_run_tags():
    run_params = _run_params(runtime_params={"cohort.source.root": USER_ROOT, "seed": 3})
    other = Pipeline([node(lambda p: p, "params:predict", "out", name="predict_only")])
    InputSafetyHook().before_pipeline_run(run_params, other, _catalog(PARAMS))
    assert run_params["runtime_params"]["cohort.source.root"].startswith("path-")
    assert run_params["runtime_params"]["seed"] == 3
    assert run_params["project_path"] == "ssc-skin"


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """One throwaway SQLite store for the module (creating one takes seconds)."""
    folder = tmp_path_factory.mktemp("mlflow")
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    yield MlflowClient()
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def _kedro_mlflow_hook() -> MlflowHook:
    """kedro-mlflow's hook, with the parameter settings of conf/base/mlflow.yml (what its
    before_pipeline_run would set) and no run of its own (the test's run is active)."""
    config = yaml.safe_load((PROJECT / "conf/base/mlflow.yml").read_text())["tracking"]
    hook = MlflowHook()
    hook.flatten = config["params"]["dict_params"]["flatten"]
    hook.recursive = config["params"]["dict_params"]["recursive"]
    hook.sep = config["params"]["dict_params"]["sep"]
    hook.long_params_strategy = config["params"]["long_params_strategy"]
    return hook


def test_mlflow_params_keep_no_user_path(mlflow_store):
    seen = {}

    def consume(cohort, predict, root):
        seen.update(cohort=cohort, predict=predict, root=root)
        return 1

    pipeline = Pipeline(
        [
            node(
                consume,
                ["params:cohort", "params:predict", "params:cohort.source.root"],
                "out",
                name="consume",
            )
        ]
    )
    catalog = _catalog(PARAMS)
    catalog["params:cohort.source.root"] = USER_ROOT
    hooks = _create_hook_manager()
    hooks.register(_kedro_mlflow_hook())
    hooks.register(InputSafetyHook())
    with mlflow.start_run() as run:
        SequentialRunner().run(pipeline, catalog, hooks)
    params = mlflow_store.get_run(run.info.run_id).data.params
    assert params["cohort.source.layout"] == "folder"  # kedro-mlflow did log the params
    assert params["cohort.checks.min_tissue_fraction"] == "0.05"
    for name in (
        "cohort.source.root",
        "cohort.source.manifest",
        "predict.input",
        "cohort.source.root",
    ):
        assert params[name].startswith("path-"), name
    assert not [v for v in params.values() if "/home/ann" in v or "SMITH07" in v]
    assert seen["root"] == USER_ROOT  # the node itself got the real paths
    assert seen["cohort"]["source"]["root"] == USER_ROOT
    assert seen["predict"]["input"] == PARAMS["predict"]["input"]


def test_without_the_input_hook_kedro_mlflow_would_log_the_paths(mlflow_store):
    """The check above can fail: kedro-mlflow alone logs the user's folder."""
    pipeline = Pipeline([node(lambda c: 1, "params:cohort", "out", name="consume")])
    hooks = _create_hook_manager()
    hooks.register(_kedro_mlflow_hook())
    with mlflow.start_run() as run:
        SequentialRunner().run(pipeline, _catalog(PARAMS), hooks)
    assert mlflow_store.get_run(run.info.run_id).data.params["cohort.source.root"] == USER_ROOT
