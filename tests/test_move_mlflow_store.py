"""scripts/move_mlflow_store.py: a project folder that moved finds its MLflow artifacts again."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tests.helpers import tracking_uri

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "move_mlflow_store.py"
spec = importlib.util.spec_from_file_location("move_mlflow_store", SCRIPT)
mover = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mover)


class _Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def _study(folder: Path) -> tuple[str, str]:
    """A run with an artifact and a registered model, in `folder` as `kedro run` leaves it."""
    with tracking_uri(f"sqlite:///{folder / 'mlflow.db'}"):
        experiment = mlflow.create_experiment("ssc_skin", str(folder / "mlruns" / "1"))
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_text("# report", "report.md")
            uri = mlflow.pyfunc.log_model(name="m", python_model=_Echo(), pip_requirements=[])
            mlflow.register_model(uri.model_uri, "ssc-skin-binary")
    return run.info.run_id, uri.model_uri


def test_a_moved_project_finds_its_artifacts_and_models_again(tmp_path, monkeypatch):
    old = tmp_path / "MRN-4471-Smith" / "ssc-skin"
    old.mkdir(parents=True)
    run_id, _ = _study(old)
    new = tmp_path / "elsewhere" / "ssc-skin"
    shutil.move(old, new)
    with (
        tracking_uri(f"sqlite:///{new / 'mlflow.db'}"),
        pytest.raises((OSError, MlflowException)),
    ):
        mlflow.artifacts.load_text(f"runs:/{run_id}/report.md")  # lost after the move
    monkeypatch.chdir(new)
    assert mover.main([]) == 0
    with tracking_uri(f"sqlite:///{new / 'mlflow.db'}"):
        assert mlflow.artifacts.load_text(f"runs:/{run_id}/report.md") == "# report"
        assert mlflow.pyfunc.load_model("models:/ssc-skin-binary/1") is not None
        run = MlflowClient().get_run(run_id)
        assert str(new) in run.info.artifact_uri and "MRN-4471" not in run.info.artifact_uri


def test_without_a_store_it_says_so_and_changes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert mover.main([]) == 2
    assert "no MLflow store" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
