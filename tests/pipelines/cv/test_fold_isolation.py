"""The default run: every patient tested once, and no fold's fitted state sees its test patients.

The default run of `kedro run --env test` (3 folds, then the final fit, export and registry)
runs in this process with the default runner (`FoldParallelRunner`: two nodes at a time, in
threads, so two folds' fits overlap), with spies on
every fitting function (the stain normaliser, the UNet and classifier training loop, the peer,
the hybrid) that record, per fold, what each was fitted on. Every record is then checked against
that fold's test patients: their patches (at the size the model saw), their texture features,
their images and their ids must never appear. The same records must contain the fold's training
patients, so that the check can fail.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from kedro.framework.hooks import hook_impl
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from PIL import Image

from ssc_skin.evaluation import hybrid, texture
from ssc_skin.imaging import stain, tiling
from ssc_skin.models import training
from ssc_skin.runner import FoldParallelRunner
from tests.helpers import copy_project, logged_report_problems, mlflow_sandbox

pytestmark = pytest.mark.e2e


def _digests(rows: np.ndarray) -> set[str]:
    return {hashlib.sha1(np.ascontiguousarray(r).tobytes()).hexdigest() for r in rows}


class Recorder:
    """A Kedro hook that knows which fold is running, and keeps each fold's patches."""

    def __init__(self) -> None:
        self.local = threading.local()  # the fold of the node running in this thread
        self.fitted: dict[str, list[tuple[str, Any]]] = defaultdict(list)
        self.patches: dict[str, tuple[np.ndarray, pd.DataFrame]] = {}

    @hook_impl
    def before_node_run(self, node: Any) -> None:
        first = (node.namespace or "").split(".")[0]
        self.local.fold = first if first.startswith("fold_") else None

    @property
    def fold(self) -> str | None:
        return getattr(self.local, "fold", None)

    @hook_impl
    def after_node_run(self, node: Any, outputs: dict[str, Any]) -> None:
        if self.fold and node.name == f"{self.fold}.fold_patches":
            arrays = outputs[f"{self.fold}.patches"]
            self.patches[self.fold] = (
                np.array(arrays["images"]),
                outputs[f"{self.fold}.patch_index"].copy(),
            )

    def record(self, kind: str, value: Any) -> None:
        if self.fold:
            self.fitted[self.fold].append((kind, value))


@pytest.fixture(scope="module")
def cross_validation(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("isolation"))
    recorder = Recorder()
    patch = pytest.MonkeyPatch()
    fit, fit_texture, fit_hybrid, fit_normalizer = (
        training.fit,
        texture.fit,
        hybrid.fit,
        stain.fit_normalizer,
    )

    def spy_fit(model, train, val, **kwargs):
        recorder.record("arrays", (train[0], val[0]))
        return fit(model, train, val, **kwargs)

    def spy_texture(train, val, *args, **kwargs):
        recorder.record("features", (train[0], val[0]))
        return fit_texture(train, val, *args, **kwargs)

    def spy_hybrid(probabilities, labels, patients, *args, **kwargs):
        recorder.record("patients", set(patients))
        return fit_hybrid(probabilities, labels, patients, *args, **kwargs)

    def spy_normalizer(method, images, *args, **kwargs):
        images = list(images)
        recorder.record("images", images)
        return fit_normalizer(method, images, *args, **kwargs)

    patch.setattr(training, "fit", spy_fit)
    patch.setattr(texture, "fit", spy_texture)
    patch.setattr(hybrid, "fit", spy_hybrid)
    patch.setattr(stain, "fit_normalizer", spy_normalizer)
    patch.chdir(project)
    patch.setenv("KEDRO_DISABLE_TELEMETRY", "1")
    try:
        with mlflow_sandbox():
            bootstrap_project(project)
            with KedroSession.create(project_path=project, env="test") as session:
                session._hook_manager.register(recorder)
                session.run(runner=FoldParallelRunner())
    finally:
        patch.undo()
    return project, recorder


def _fold_patients(project: Path, fold: str) -> dict[str, set[str]]:
    table = pd.read_csv(project / "data" / "03_primary" / "cv" / f"{fold}_patient_splits.csv")
    return {s: set(table.loc[table["split"] == s, "patient"]) for s in ("train", "val", "test")}


def test_every_fold_fitted_something_of_each_kind(cross_validation):
    _, recorder = cross_validation
    assert len(recorder.patches) == 3
    for fold, records in recorder.fitted.items():
        kinds = {kind for kind, _ in records}
        # The default hybrid is a vote (evaluation.hybrid.method): it fits nothing, so no
        # "patients" record; the stacked one's isolation is in tests/evaluation/test_hybrid.py.
        assert kinds == {"arrays", "features", "images"}, fold


def test_no_fitted_state_of_a_fold_saw_its_test_patients(cross_validation):
    project, recorder = cross_validation
    manifest = pd.read_csv(project / "data" / "02_intermediate" / "manifest.csv")
    for fold, (images, index) in recorder.patches.items():
        patients = _fold_patients(project, fold)
        assert patients["test"], fold
        rows = {
            s: index.loc[index["patient"].isin(patients[s]), "row"].to_numpy() for s in patients
        }
        seen_train = False
        for kind, value in recorder.fitted[fold]:
            if kind == "arrays":
                for array in value:
                    size = array.shape[1]
                    test = _digests(tiling.resize_batch(images[rows["test"]], size))
                    assert not test & _digests(array), f"{fold}: a model trained on test patches"
                    train = _digests(tiling.resize_batch(images[rows["train"]], size))
                    seen_train |= bool(train & _digests(array))
            elif kind == "features":
                test = _digests(texture.features(images[rows["test"]]).astype(np.float32))
                for array in value:
                    assert not test & _digests(array.astype(np.float32)), f"{fold}: peer"
            elif kind == "patients":
                assert not value & patients["test"], f"{fold}: hybrid stacked on test patients"
            elif kind == "images":
                test_images = manifest.loc[manifest["patient"].isin(patients["test"]), "image"]
                pixels = {
                    np.asarray(
                        Image.open(
                            project / "data" / "02_intermediate" / "images" / f"{i}.png"
                        ).convert("RGB")
                    ).tobytes()
                    for i in test_images
                }
                assert not any(i.tobytes() in pixels for i in value), f"{fold}: normaliser"
        assert seen_train, f"{fold}: the check found none of the training patches (cannot fail)"


def test_the_default_run_reports_every_patient_pooled_with_a_verdict(cross_validation):
    project, _ = cross_validation
    reporting = project / "data" / "08_reporting" / "cv"
    report = (reporting / "report.md").read_text()
    manifest = pd.read_csv(project / "data" / "02_intermediate" / "manifest.csv")
    patients = manifest["patient"].nunique()
    assert f"| binary | colour+texture LR | {patients}/{patients} |" in report
    assert "## Verdict: do the deep models beat the classical peer?" in report
    assert "| three_class | hybrid (deep + peer) |" in report
    for ns in ("binary.hybrid", "three_class.texture", "binary.mobilenetv2"):
        pooled = json.loads((reporting / ns / "evaluation.json").read_text())
        assert pooled["test_patients_total"] == patients, ns
        assert pooled["every_patient_tested_once"] is True
        assert "val_patient_balanced_accuracy" in pooled  # the registry ranks on validation


def test_the_logged_cv_report_html_embeds_every_figure_report_md_links(cross_validation, tmp_path):
    project, _ = cross_validation
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ssc_skin")
    # In-process, the parent run is still open when the session returns (the `kedro` command
    # ends it at exit) and mlflow_sandbox closes it: pick it by having no parent, not by status.
    runs = client.search_runs([experiment.experiment_id])
    (run,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    client.download_artifacts(run.info.run_id, "cv", str(tmp_path))
    assert logged_report_problems(tmp_path, "cv") == []


def test_the_final_fit_uses_every_patient_and_is_exported(cross_validation):
    project, _ = cross_validation
    final = pd.read_csv(project / "data" / "03_primary" / "final_patient_splits.csv")
    manifest = pd.read_csv(project / "data" / "02_intermediate" / "manifest.csv")
    assert set(final["patient"]) == set(manifest["patient"])
    assert set(final["split"]) == {"train", "val"}
    models = project / "data" / "06_models"
    for name in ("binary.cnn.keras", "binary.texture.pkl", "three_class.hybrid.pkl"):
        assert (models / name).stat().st_size > 0, name
    assert not (project / "data" / "03_primary" / "patient_splits.csv").exists()


def test_the_threads_of_the_default_runner_log_into_one_run(cross_validation):
    """Two nodes at a time in two threads: still one parent run (tagged with the runner), every
    model's nested run under it, none opened on its own by a worker thread."""
    project, _ = cross_validation
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ssc_skin")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.tags["runner"] == "FoldParallelRunner"
    nested = [r for r in runs if r is not parent]
    assert {r.data.tags["mlflow.parentRunId"] for r in nested} == {parent.info.run_id}
    folds = {r.data.tags.get("fold") for r in nested} - {None}
    assert folds == {"fold_0", "fold_1", "fold_2"}
    names = [r.info.run_name for r in nested]
    assert len(names) == len(set(names))  # each model of each fold once
