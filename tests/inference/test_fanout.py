"""`inference.fanout`: one image's rows, and predict's work by value for Dask workers."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
from PIL import Image

from ssc_skin.cohort import synthetic
from ssc_skin.constants import Skipped
from ssc_skin.inference import export, fanout
from ssc_skin.preprocessing.preprocess import PreprocessConfig, Preprocessor


class BrightnessModel:
    """A classifier without TensorFlow: P(ssc) is the patch's mean brightness."""

    def __init__(self, task: str = "binary", runtime: str = export.FLOAT32) -> None:
        self.task, self.architecture, self.runtime, self.input_size = task, "cnn", runtime, 32
        self.class_names = ("normal", "ssc")

    def probabilities(self, patches: np.ndarray) -> np.ndarray:
        p = np.asarray(patches, float).mean(axis=(1, 2, 3)) / 255
        return np.stack([1 - p, p], axis=1)


def test_image_rows_give_one_row_per_task_with_pseudonyms_only(tmp_path):
    patient = synthetic.make_patient("x", "late", np.random.default_rng(3))
    image = synthetic.render_section(patient, 0, (192, 192), artefact_rate=0.0).image
    path = tmp_path / "MRN-4471-Smith_DOB19700101.png"
    Image.fromarray(image).save(path)
    record = {"image": "im-1", "patient": "pt-a", "image_path": str(path)}
    preprocessor = Preprocessor(PreprocessConfig(patch_size=64, stride=64, use_segmentation=False))
    models = [BrightnessModel("binary"), BrightnessModel("other")]
    rows = fanout.image_rows(record, models, preprocessor, 0.6)
    assert [r["task"] for r in rows] == ["binary", "other"]
    found = preprocessor(image)
    expected = BrightnessModel().probabilities(found.used_patches).mean(axis=0)
    for row in rows:
        assert row["image"] == "im-1" and row["patient"] == "pt-a" and row["level"] == "image"
        assert row["n_patches"] == len(found.used_patches) > 0
        assert row["probability_ssc"] == np.float64(expected[1])
        assert "Smith" not in repr(row)


def _trained(tflite: bytes):
    return {"binary.cnn": SimpleNamespace(tflite=lambda: tflite)}


def test_predict_work_is_plain_bytes_with_a_stable_key():
    config = PreprocessConfig().to_dict()
    work = fanout.predict_work([BrightnessModel()], _trained(b"tflite"), config, b"unet", 0.6)
    assert isinstance(work, fanout.PredictWork)
    assert pickle.loads(pickle.dumps(work)) == work  # sent to workers by value
    assert work.classifiers[0].tflite == b"tflite"
    again = fanout.predict_work([BrightnessModel()], _trained(b"tflite"), config, b"unet", 0.6)
    other = fanout.predict_work([BrightnessModel()], _trained(b"tflite"), config, b"unet", 0.7)
    changed = fanout.predict_work([BrightnessModel()], _trained(b"tflite2"), config, b"unet", 0.6)
    assert again.key == work.key and len({work.key, other.key, changed.key}) == 3


def test_a_keras_task_is_not_sent_to_workers_and_says_why():
    models = [BrightnessModel("binary"), BrightnessModel("three_class", export.KERAS)]
    work = fanout.predict_work(models, {}, PreprocessConfig().to_dict(), b"unet", 0.6)
    assert isinstance(work, Skipped)
    assert "three_class" in work.reason and "predict.runtime: tflite" in work.reason
