"""The project's model-file datasets: a model, or a `Skipped` marker with its reason; and the
read-only view of a training run's models that `predict` reads."""

import json

import keras
import mlflow
import numpy as np
import pytest

from ssc_skin.constants import Skipped
from ssc_skin.datasets import KerasModelDataset, TFLiteModelDataset, TrainedModelsDataset
from ssc_skin.models.builders import build_cnn


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_cnn(input_size=16, n_classes=2, filters=(4,), dense_units=4)


def test_a_keras_model_round_trips_and_a_skip_replaces_it(model, tmp_path):
    dataset = KerasModelDataset(str(tmp_path / "binary.cnn.keras"), artifact_path=None)
    assert not dataset.exists()
    dataset.save(model)
    loaded = KerasModelDataset(str(tmp_path / "binary.cnn.keras"), artifact_path=None).load()
    assert loaded is not model  # another dataset (a later run) reads the file
    x = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), atol=1e-6)
    dataset.save(Skipped("labels cannot express it"))
    assert not (tmp_path / "binary.cnn.keras").exists()  # no stale model beside the marker
    assert dataset.exists() and dataset.load() == Skipped("labels cannot express it")
    dataset.save(model)  # and back: the marker goes
    assert not (tmp_path / "binary.cnn.skipped.json").exists()
    assert isinstance(dataset.load(), keras.Model)


def test_the_written_model_is_handed_on_until_released(model, tmp_path):
    """Readers in the same run get the model as written (no 1-2 s reload each); after Kedro
    releases the dataset, a read loads the file again; a skip is never shadowed by the model."""
    dataset = KerasModelDataset(str(tmp_path / "m.keras"), artifact_path=None)
    dataset.save(model)
    assert dataset.load() is model
    dataset.release()
    reloaded = dataset.load()
    assert reloaded is not model
    np.testing.assert_array_equal(reloaded.get_weights()[0], model.get_weights()[0])
    dataset.save(model)
    dataset.save(Skipped("no"))
    assert dataset.load() == Skipped("no")


def test_model_files_are_logged_to_the_active_mlflow_run(model, tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment("datasets", (tmp_path / "art").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            TFLiteModelDataset(str(tmp_path / "m.float32.tflite"), "models").save(b"TFL3-bytes")
            KerasModelDataset(str(tmp_path / "m.keras"), "models").save(model)
            KerasModelDataset(str(tmp_path / "s.keras"), "models").save(Skipped("x"))
        names = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "models")}
    finally:
        mlflow.set_tracking_uri(None)
    assert names == {"models/m.float32.tflite", "models/m.keras"}


def test_trained_models_are_found_by_name_and_loaded_only_on_demand(model, tmp_path):
    models, reports = tmp_path / "models", tmp_path / "reports"
    models.mkdir()
    model.save(models / "binary.cnn.keras")
    (models / "binary.cnn.float32.tflite").write_bytes(b"TFL3")
    (models / "three_class.cnn.skipped.json").write_text(json.dumps({"reason": "binary"}))
    (models / "unet.keras").write_bytes(b"not a classifier")  # not <task>.<arch>: ignored
    (reports / "binary.cnn").mkdir(parents=True)
    (reports / "binary.cnn" / "export.json").write_text(json.dumps({"runtime": "keras"}))
    found = TrainedModelsDataset(str(models), str(reports)).load()
    assert set(found) == {"binary.cnn", "three_class.cnn"}
    binary, skipped = found["binary.cnn"], found["three_class.cnn"]
    assert binary.export_summary == {"runtime": "keras"} and binary.skipped is None
    assert binary.tflite() == b"TFL3" and isinstance(binary.keras(), keras.Model)
    assert skipped.skipped == "binary" and skipped.keras is None and skipped.tflite is None
    with pytest.raises(Exception, match="written by their own datasets"):
        TrainedModelsDataset(str(models), str(reports)).save({})


def test_preprocess_config_dataset_round_trips_the_typed_config(tmp_path):
    from ssc_skin.datasets import PreprocessConfigDataset  # noqa: PLC0415
    from ssc_skin.preprocessing.preprocess import PreprocessConfig  # noqa: PLC0415

    dataset = PreprocessConfigDataset(str(tmp_path / "models" / "preprocess.json"))
    config = PreprocessConfig(patch_size=32, stride=32, min_saturation=20)
    dataset.save(config)
    loaded = dataset.load()
    assert isinstance(loaded, PreprocessConfig) and loaded == config
    (tmp_path / "models" / "preprocess.json").write_text('{"patch_sise": 32}')
    with pytest.raises(Exception, match="patch_sise"):
        dataset.load()
