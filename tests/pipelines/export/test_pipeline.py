"""The `export` pipeline: TFLite export checked against Keras, the runtime choice, the served
predictor; and the whole pipeline on an in-memory catalog."""

from __future__ import annotations

import json

import keras
import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from ssc_skin.constants import Skipped
from ssc_skin.datasets import TFLiteModelDataset
from ssc_skin.inference import export, serving
from ssc_skin.models.builders import build_cnn
from ssc_skin.pipelines.export.nodes import export_classifier, log_whole_image_predictor
from ssc_skin.pipelines.export.pipeline import create_pipeline
from ssc_skin.preprocessing.preprocess import PreprocessConfig
from tests.helpers import sqlite_tracking
from tests.pipelines.runner import run_pipeline

SIZE = 32  # classifier input
PATCH = 64
BINARY = {"name": "binary", "classes": ["normal", "ssc"]}
THREE = {"name": "three_class", "classes": ["normal", "early", "late"]}
TASKS = {"binary": BINARY, "three_class": THREE}
CNN = {"name": "cnn", "input_size": SIZE}
EXPORT = {
    "representative_patches": 16,
    "agreement_patches": 48,
    "latency_patches": 16,
    "latency_rounds": 2,
    "agreement_threshold": 0.99,
    "num_threads": 2,
    "batch_size": 8,
    "seed": 0,
    "log_predictor": True,
}
PREPROCESS = PreprocessConfig(patch_size=PATCH, stride=PATCH, unet_input_size=32).to_dict()


def _classifier(n_classes: int, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return build_cnn(input_size=SIZE, n_classes=n_classes, filters=(8,), dense_units=8)


@pytest.fixture(scope="module")
def patch_data() -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Smooth colour fields with noise, as patch arrays at patch size, in three splits."""
    rng = np.random.default_rng(1)
    n = 72
    images = np.clip(
        rng.uniform(60, 230, (n, 1, 1, 3)) + rng.normal(0, 25, (n, PATCH, PATCH, 3)), 0, 255
    ).astype(np.uint8)
    index = pd.DataFrame(
        {
            "row": np.arange(n),
            "split": np.repeat(["train", "val", "test"], 24),
            "label": np.tile(["normal", "late"], n // 2),
        }
    )
    return {"images": images}, index


@pytest.fixture(scope="module")
def trained(patch_data) -> keras.Model:
    """A tiny classifier fitted for one epoch: enough to have real, uneven probabilities."""
    patches, index = patch_data
    model = _classifier(2)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = patches["images"][:, ::2, ::2].astype(np.float32)
    model.fit(x, (index["label"] == "late").to_numpy(int), epochs=1, verbose=0)
    return model


@pytest.fixture(scope="module")
def exported(trained, patch_data):
    return export_classifier(trained, *patch_data, BINARY, CNN, EXPORT)


def test_export_writes_both_tflite_models_and_an_agreement_summary(exported, tmp_path):
    float32, int8, summary, metrics = exported
    runtimes = summary["runtimes"]
    assert set(runtimes) == {"keras", "tflite_float32", "tflite_int8"}
    for name in ("tflite_float32", "tflite_int8"):
        assert {
            "label_agreement",
            "max_abs_probability_difference",
            "patches_per_second",
            "ms_per_patch",
            "model_bytes",
        } <= set(runtimes[name])
        assert 0 <= runtimes[name]["label_agreement"] <= 1
    assert runtimes["tflite_float32"]["label_agreement"] == 1.0
    assert runtimes["tflite_float32"]["max_abs_probability_difference"] < 1e-4
    assert summary["runtime"] in {"keras", "tflite_float32"} and summary["runtime_reason"]
    assert summary["agreement_patches"] == 24  # every test patch (fewer than asked for)
    assert runtimes["tflite_int8"]["model_bytes"] < runtimes["tflite_float32"]["model_bytes"]
    assert metrics["tflite_float32.label_agreement"]["value"] == 1.0
    assert "uses_tflite" in metrics
    json.dumps(summary)  # the JSON dataset can write it
    for name, data in (("float32", float32), ("int8", int8)):
        dataset = TFLiteModelDataset(str(tmp_path / f"m.{name}.tflite"), None)
        dataset.save(data)
        assert (tmp_path / f"m.{name}.tflite").read_bytes()[4:8] == b"TFL3"
        assert dataset.load() == data


def test_export_of_a_skipped_task_saves_markers(patch_data, tmp_path):
    float32, int8, summary, metrics = export_classifier(
        Skipped("binary-only cohort"), *patch_data, THREE, CNN, EXPORT
    )
    assert isinstance(float32, Skipped) and isinstance(int8, Skipped) and metrics == {}
    assert summary["skipped"] == "binary-only cohort"
    dataset = TFLiteModelDataset(str(tmp_path / "t.float32.tflite"), None)
    dataset.save(float32)
    assert not (tmp_path / "t.float32.tflite").exists() and dataset.exists()
    assert dataset.load() == Skipped("binary-only cohort")
    with mlflow.start_run():  # a skipped model logs nothing, even inside a run
        run = mlflow.active_run().info.run_id
        log_whole_image_predictor(Skipped("x"), float32, summary, THREE, CNN, PREPROCESS, b"", 0.6)
    assert not mlflow.get_run(run).data.tags.get("three_class.cnn.whole_image_predictor_uri")


def test_predictor_logging_is_a_no_op_without_an_mlflow_run(exported, trained, monkeypatch):
    calls = []
    monkeypatch.setattr(serving, "log_predictor", lambda *a, **k: calls.append(a))
    assert mlflow.active_run() is None
    float32, _, summary, _ = exported
    log_whole_image_predictor(trained, float32, summary, BINARY, CNN, PREPROCESS, b"", 0.6)
    assert calls == [] and mlflow.active_run() is None


def test_runtime_choice_needs_agreement_and_speed():
    fast = {
        "keras": {"patches_per_second": 100.0},
        "tflite_float32": {"patches_per_second": 300.0, "label_agreement": 1.0},
    }
    assert export.choose_runtime(fast, 0.99)[0] == "tflite_float32"
    disagrees = {**fast, "tflite_float32": {"patches_per_second": 300.0, "label_agreement": 0.9}}
    assert export.choose_runtime(disagrees, 0.99)[0] == "keras"
    slow = {**fast, "tflite_float32": {"patches_per_second": 50.0, "label_agreement": 1.0}}
    assert export.choose_runtime(slow, 0.99)[0] == "keras"


def test_the_export_pipeline_runs_for_every_model_on_an_in_memory_catalog(patch_data, trained):
    """Every task x architecture namespace, through Kedro's runner: a trained model, and a
    skipped task that passes through as markers."""
    pipeline = create_pipeline()
    namespaces = {n.namespace for n in pipeline.nodes}
    assert {
        f"{t}.{a}" for t in ("binary", "three_class") for a in ("mobilenetv2", "cnn", "densenet")
    } <= namespaces  # every deep model of the grid (the grid may declare more)
    pipeline = pipeline.only_nodes_with_namespaces(["binary.cnn", "three_class.cnn"])
    patches, index = patch_data
    catalog = run_pipeline(
        pipeline,
        {
            "patches": patches,
            "classifier_patch_index": index,
            "preprocess_config": PREPROCESS,
            "unet_tflite": b"",
            "binary.cnn.classifier": trained,
            "three_class.cnn.classifier": Skipped("binary cohort"),
            "binary.cnn.training_summary": {"mlflow_run_id": None},
            "three_class.cnn.training_summary": {"skipped": "binary cohort"},
            "params:export": {**EXPORT, "int8": False},
            "params:export.log_predictor": True,
            "params:predict.low_confidence_threshold": 0.6,
            "params:classification.tasks.binary": BINARY,
            "params:classification.tasks.three_class": THREE,
            "params:classification.architectures.cnn": CNN,
        },
    )
    summary = catalog.load("binary.cnn.export_summary")
    assert summary["runtimes"]["tflite_float32"]["label_agreement"] == 1.0
    assert catalog.load("binary.cnn.tflite_float32")[4:8] == b"TFL3"
    assert isinstance(catalog.load("binary.cnn.tflite_int8"), Skipped)
    assert catalog.load("three_class.cnn.export_summary")["skipped"] == "binary cohort"


class _Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def test_the_predictor_goes_into_the_nested_run_that_trained_the_model(
    exported, trained, monkeypatch, tmp_path
):
    """So the registered version links to the training run, and the parent keeps a tag."""

    def log_predictor(path, config, unet_path, name):
        return mlflow.pyfunc.log_model(name=name, python_model=_Echo(), pip_requirements=[])

    monkeypatch.setattr(serving, "log_predictor", log_predictor)
    float32, _, summary, _ = exported
    with sqlite_tracking(tmp_path), mlflow.start_run() as parent:
        with mlflow.start_run(run_name="binary.cnn", nested=True) as child:
            pass
        result = log_whole_image_predictor(
            trained,
            float32,
            summary,
            BINARY,
            CNN,
            PREPROCESS,
            b"",
            0.6,
            True,
            {"mlflow_run_id": child.info.run_id},
        )
        model = mlflow.get_logged_model(result["uri"].removeprefix("models:/"))
        assert model.source_run_id == child.info.run_id
        tags = mlflow.get_run(parent.info.run_id).data.tags
        assert tags["binary.cnn.whole_image_predictor_uri"] == result["uri"]
        assert mlflow.get_run(child.info.run_id).info.status == "FINISHED"
        assert mlflow.active_run().info.run_id == parent.info.run_id
        # the parent's metrics are not the predictor's (MLflow links a run's step-0 metrics to
        # every model logged in that run: a predictor in the parent took all ~1,500)
        mlflow.log_metric("binary.cnn.test_patient_accuracy", 0.5)
        model = mlflow.get_logged_model(result["uri"].removeprefix("models:/"))
        assert "binary.cnn.test_patient_accuracy" not in {m.key for m in model.metrics or []}
