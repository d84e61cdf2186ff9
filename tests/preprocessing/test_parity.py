"""One path: an image gives the same patches and the same class probabilities through
training-time patching (the `patches` and `segmentation` stages), the `predict` pipeline, and
a REST request to the served MLflow model (`mlflow models serve --env-manager local`)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ssc_skin.cohort import synthetic
from ssc_skin.datasets import TrainedModelsDataset
from ssc_skin.imaging import stain, tiling
from ssc_skin.inference import export, serving
from ssc_skin.models import tta
from ssc_skin.models.builders import build_cnn, build_unet
from ssc_skin.pipelines.patches.nodes import extract_patches
from ssc_skin.pipelines.predict.pipeline import create_pipeline as predict_pipeline
from ssc_skin.pipelines.segmentation.nodes import score_patches, select_patches
from ssc_skin.preprocessing.preprocess import PreprocessConfig, Preprocessor
from tests.inference.test_serving import _stop, _wait_for_ping, free_port, http
from tests.pipelines.runner import run_pipeline

CLASSES = ("normal", "ssc")
INPUT = 32  # classifier input
TOLERANCE = 1e-5


def _section(label: str, seed: int, size: int = 256) -> np.ndarray:
    patient = synthetic.make_patient(f"P{seed}", label, np.random.default_rng(seed))
    return synthetic.render_section(patient, 0, (size, size), artefact_rate=0.0).image


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A training run's artefacts: preprocessing with a fitted Macenko normaliser and UNet
    gating, the UNet (Keras and TFLite) and a binary classifier, all saved like the run does."""
    folder = tmp_path_factory.mktemp("study")
    keras.utils.set_random_seed(3)
    normalizer = stain.fit_normalizer("macenko", [_section("normal", 1), _section("late", 2)])
    unet = build_unet(16, 4, base_filters=4, depth=2)
    unet_tflite = export.to_tflite(unet)
    # a gating threshold that keeps some patches and drops others with this UNet
    probe = Preprocessor(
        PreprocessConfig(
            patch_size=64, stride=64, unet_input_size=16, normalizer=normalizer.to_dict()
        ),
        export.tflite_segmenter(unet_tflite),
    )
    dermis = probe(_section("early", 4)).dermis_fraction
    threshold = float(np.median(dermis)) if dermis is not None else 0.0
    config = PreprocessConfig(
        patch_size=64,
        stride=64,
        unet_input_size=16,
        normalizer=normalizer.to_dict(),
        use_segmentation=True,
        min_dermis_fraction=threshold,
    ).to_dict()
    # As training saves it: with the default test-time augmentation inside the graph, which
    # predict and the REST server must then apply too.
    classifier = tta.with_test_time_augmentation(
        build_cnn(input_size=INPUT, n_classes=2, filters=(8,), dense_units=8), "dihedral"
    )
    models, reports = folder / "models", folder / "reports"
    (reports / "binary.cnn").mkdir(parents=True)
    models.mkdir()
    classifier.save(models / "binary.cnn.keras")
    (reports / "binary.cnn" / "export.json").write_text(json.dumps({"runtime": "keras"}))
    (folder / "unet.tflite").write_bytes(unet_tflite)
    return {
        "config": config,
        "unet": unet,
        "unet_tflite": unet_tflite,
        "classifier": classifier,
        "models": models,
        "reports": reports,
        "folder": folder,
    }


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("new")
    path = folder / "P77_biopsy.png"
    Image.fromarray(_section("early", 4)).save(path)
    return path


def _training_path(study, image_file) -> tuple[set[tuple[int, int]], np.ndarray, str]:
    """The `patches` and `segmentation` stages' nodes on a one-image test cohort, then the
    classifier on the patches they select (what the evaluation scores)."""
    image = Image.open(image_file)
    manifest = pd.DataFrame(
        [
            {
                "image": "im-1",
                "patient": "pt-1",
                "label": "early",
                "has_mask": False,
                "mask_source": "none",
            }
        ]
    )
    splits = pd.DataFrame([{"patient": "pt-1", "split": "test"}])
    patches, index = extract_patches({"im-1": lambda: image}, {}, manifest, splits, study["config"])
    scored, _, _ = score_patches(
        study["unet"], study["unet_tflite"], patches, index, study["config"], {}
    )
    selected, images = select_patches(scored, manifest, splits, study["config"])
    rows = selected["row"].to_numpy()
    inputs = tiling.resize_batch(patches["images"][rows], INPUT)
    probabilities = export.keras_predictor(study["classifier"])(inputs).mean(axis=0)
    positions = set(zip(selected["x"], selected["y"], strict=True))
    return positions, probabilities, images["selection"].iloc[0]


def _predict_path(study, image_file) -> pd.Series:
    """The `predict` pipeline through Kedro's runner, with the catalog's model dataset."""
    params = {
        "input": str(image_file),
        "architecture": "cnn",
        "runtime": "keras",
        "tasks": ["binary"],
        "patient_ids": True,
        "patient_id_regex": None,
        "low_confidence_threshold": 0.6,
        "gradcam_images": 0,
        "num_threads": 2,
    }
    catalog = run_pipeline(
        predict_pipeline(),
        {
            "preprocess_config": study["config"],
            "unet_tflite": study["unet_tflite"],
            "trained_models": TrainedModelsDataset(
                str(study["models"]), str(study["reports"])
            ).load(),
            "params:predict": params,
            "params:cohort.source": {
                "patient_id_regex": "^(?P<patient>[A-Za-z0-9]+)",
                "tiff_page": 0,
            },
            "params:cohort.checks": {"min_tissue_fraction": 0.05},
            "params:patches": {
                "patch_size": 64,
                "stride": 64,
                "min_tissue_fraction": 0.5,
                "min_saturation": 12,
            },
            "params:classification.tasks": {"binary": {"name": "binary", "classes": CLASSES}},
            "params:classification.architectures": {"cnn": {"name": "cnn", "input_size": INPUT}},
            "params:cohort.source.tiff_page": 0,
            "params:engine": {"kind": "sequential"},
        },
    )
    table = catalog.load("new_image_predictions")
    return table[table["level"] == "image"].iloc[0]


@pytest.fixture(scope="module")
def served(study, tmp_path_factory):
    """The whole-image predictor logged the way the export stage logs it, then served."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.create_experiment(
            "parity", artifact_location=(folder / "artifacts").as_uri()
        )
        config = serving.PredictorConfig(
            class_names=CLASSES, input_size=INPUT, preprocess=study["config"]
        )
        with mlflow.start_run(experiment_id=experiment):
            model_uri = serving.log_predictor(
                study["models"] / "binary.cnn.keras", config, study["folder"] / "unet.tflite"
            ).model_uri
    finally:
        mlflow.set_tracking_uri(previous)
    port = free_port()
    log_path = folder / "server.log"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    }
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                model_uri,
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_for_ping(url, process, log_path)
            yield url
        finally:
            _stop(process)


def _rest_path(url: str, image_file: Path) -> dict:
    body = {
        "dataframe_split": {
            "columns": ["image"],
            "data": [[base64.b64encode(image_file.read_bytes()).decode()]],
        }
    }
    status, text = http(f"{url}/invocations", body)
    assert status == 200, text
    return json.loads(text)["predictions"][0]


def test_training_predict_and_rest_give_the_same_patches_and_probabilities(
    study, image_file, served
):
    positions, trained, selection = _training_path(study, image_file)
    assert positions, "the test image must have classified patches"
    assert study["config"]["min_dermis_fraction"] > 0  # gating is really applied

    found = Preprocessor(
        PreprocessConfig.from_dict(study["config"]), export.tflite_segmenter(study["unet_tflite"])
    )(np.asarray(Image.open(image_file).convert("RGB")))
    assert {(t.x, t.y) for t in found.used_tiles} == positions  # the same patches
    assert found.selection == selection

    predicted = _predict_path(study, image_file)
    rest = _rest_path(served, image_file)
    for row in (predicted, rest):
        assert row["n_patches"] == len(positions)
        assert row["selection"] == selection
        np.testing.assert_allclose(
            [row[f"probability_{c}"] for c in CLASSES], trained, atol=TOLERANCE
        )
    assert predicted["label"] == rest["label"] == CLASSES[int(np.argmax(trained))]
