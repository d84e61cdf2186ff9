"""`inference.predict`: which files, which models, the one `PredictSetup`, the table's rules."""

from __future__ import annotations

import logging

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ssc_skin.cohort import synthetic
from ssc_skin.constants import Skipped
from ssc_skin.inference import export
from ssc_skin.inference import predict as ip
from ssc_skin.inference.predict import TrainedModel
from ssc_skin.models.builders import build_cnn, build_unet
from ssc_skin.preprocessing.preprocess import PreprocessConfig

REGEX = r"^(?P<patient>[A-Za-z0-9]+)"
TASKS = {
    "binary": {"name": "binary", "classes": ["normal", "ssc"]},
    "three_class": {"name": "three_class", "classes": ["normal", "early", "late"]},
}
ARCHITECTURES = {"cnn": {"name": "cnn", "input_size": 32}}
PARAMS = {"architecture": "cnn", "runtime": "keras", "tasks": None, "low_confidence_threshold": 0.6}


@pytest.fixture(scope="module")
def trained() -> dict[str, TrainedModel]:
    keras.utils.set_random_seed(0)
    model = build_cnn(input_size=32, n_classes=2, filters=(4,), dense_units=4)
    return {
        "binary.cnn": TrainedModel("binary.cnn", lambda: model, None, None, None),
        "three_class.cnn": TrainedModel("three_class.cnn", None, None, None, "binary cohort"),
    }


@pytest.fixture(scope="module")
def unet() -> bytes:
    keras.utils.set_random_seed(0)
    return export.to_tflite(build_unet(16, 4, base_filters=4, depth=2))


def test_runtime_auto_follows_the_export_and_bad_names_are_named():
    assert ip.resolve_runtime("auto", {"runtime": export.FLOAT32}) == export.FLOAT32
    assert ip.resolve_runtime("auto", None) == export.KERAS
    assert ip.resolve_runtime("tflite", None) == export.FLOAT32
    with pytest.raises(ValueError, match="predict.runtime must be one of"):
        ip.resolve_runtime("onnx", None)


def test_a_skipped_task_is_left_out_with_its_reason(trained, caplog):
    with caplog.at_level(logging.WARNING):
        models = ip.select_models(trained, PARAMS, TASKS, ARCHITECTURES)
    assert [m.task for m in models] == ["binary"] and models[0].runtime == export.KERAS
    assert any("three_class skipped (binary cohort)" in r.getMessage() for r in caplog.records)


def test_unknown_task_or_architecture_is_one_message(trained):
    with pytest.raises(ValueError, match="predict.tasks must be among binary, three_class"):
        ip.select_models(trained, {**PARAMS, "tasks": ["binray"]}, TASKS, ARCHITECTURES)
    with pytest.raises(ValueError, match="predict.architecture one of cnn"):
        ip.select_models(trained, {**PARAMS, "architecture": "vgg"}, TASKS, ARCHITECTURES)
    only_skipped = {**PARAMS, "tasks": ["three_class"]}
    with pytest.raises(ValueError, match="no trained classifier"):
        ip.select_models(trained, only_skipped, TASKS, ARCHITECTURES)


def test_build_setup_is_the_one_object_predict_runs_with(trained, unet):
    config = PreprocessConfig(unet_input_size=16, slide={"target_microns_per_pixel": 4.0})
    source = {"tiff_page": 2, "microns_per_pixel": 0.25}
    setup = ip.build_setup(config.to_dict(), unet, trained, PARAMS, TASKS, ARCHITECTURES, source)
    assert setup.preprocessor.config == config and setup.preprocessor.unet is not None
    assert setup.tiff_page == 2 and setup.low_confidence_threshold == 0.6
    assert setup.slide_settings.target_mpp == 4.0 and setup.slide_settings.fallback_mpp == 0.25
    assert setup.work is None and setup.class_names == {"binary": ("normal", "ssc")}
    dask = ip.build_setup(
        config, unet, trained, PARAMS, TASKS, ARCHITECTURES, source, {"kind": "dask"}
    )
    assert isinstance(dask.work, Skipped) and "Keras" in dask.work.reason


def test_a_single_file_keeps_its_patient_id_and_flags_other_extensions(tmp_path):
    patient = synthetic.make_patient("x", "normal", np.random.default_rng(1))
    image = synthetic.render_section(patient, 0, (96, 96), artefact_rate=0.0).image
    Image.fromarray(image).save(tmp_path / "MRN-4471-Smith_DOB19700101.png")
    (tmp_path / "PAT_0042_notes.txt").write_text("stained 2019")
    png = ip.discover_inputs(tmp_path / "MRN-4471-Smith_DOB19700101.png", REGEX)
    assert list(png["patient_id"]) == ["MRN"] and png["problem_check"].isna().all()
    text = ip.discover_inputs(tmp_path / "PAT_0042_notes.txt", REGEX)
    assert list(text["problem_check"]) == ["not_image_extension"]
    assert (
        ip.discover_inputs(tmp_path / "MRN-4471-Smith_DOB19700101.png", None)["patient_id"]
        .isna()
        .all()
    )
    with pytest.raises(ValueError, match="neither a folder nor a file") as error:
        ip.discover_inputs(tmp_path / "PAT_0042_missing.png", REGEX)
    assert str(tmp_path) not in str(error.value)


def test_patient_rows_pool_every_patch_and_the_table_has_fixed_columns(trained):
    [model] = ip.select_models(trained, PARAMS, TASKS, ARCHITECTURES)
    rows = pd.DataFrame(
        {
            "level": "image",
            "image": ["im-1", "im-2", "im-3"],
            "patient": ["pt-a", "pt-a", None],
            "task": "binary",
            "probability_normal": [0.9, 0.2, 0.5],
            "probability_ssc": [0.1, 0.8, 0.5],
            "n_patches": [1, 3, 2],
            "n_tissue_patches": [1, 3, 2],
            "selection": "ok",
        }
    )
    patients = ip.patient_means(rows, [model], 0.6)
    assert list(patients["patient"]) == ["pt-a"]  # an image without a patient id has no row
    assert patients["probability_ssc"].iloc[0] == pytest.approx((0.1 * 1 + 0.8 * 3) / 4)
    assert patients["label"].iloc[0] == "ssc" and patients["n_images"].iloc[0] == 2
    assert list(patients.columns[-2:]) == ["microns_per_pixel", "mpp_source"]
