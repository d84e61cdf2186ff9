"""The whole-image pyfunc: logged, loaded back, and answering REST calls from `mlflow models serve`."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking._tracking_service import utils as tracking_utils

from ssc_skin.inference import export, serving
from ssc_skin.models.builders import build_cnn
from ssc_skin.preprocessing.preprocess import PreprocessConfig, Preprocessor

CLASSES = ("normal", "ssc")
PREPROCESS = PreprocessConfig(
    patch_size=64, stride=64, min_tissue_fraction=0.5, use_segmentation=False
)
CONFIG = serving.PredictorConfig(
    class_names=CLASSES, input_size=32, preprocess=PREPROCESS.to_dict()
)
SERVER_START_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def classifier_files(tmp_path_factory) -> dict[str, Path]:
    keras.utils.set_random_seed(0)
    model = build_cnn(input_size=32, n_classes=len(CLASSES), filters=(8, 16))
    folder = tmp_path_factory.mktemp("classifier")
    model.save(folder / "classifier.keras")
    (folder / "classifier.tflite").write_bytes(export.to_tflite(model))
    return {"keras": folder / "classifier.keras", "tflite": folder / "classifier.tflite"}


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> Iterator[str]:
    """A throwaway sqlite store; the process-wide tracking URI is restored afterwards."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setattr(tracking_utils, "_tracking_uri", None)  # env var wins, restored after
        experiment = mlflow.create_experiment(
            "serving-test", artifact_location=(folder / "artifacts").as_uri()
        )
        patch.setenv("MLFLOW_EXPERIMENT_ID", experiment)
        yield uri


@pytest.fixture(scope="module")
def model_uris(classifier_files, tracking_uri) -> dict[str, str]:
    with mlflow.start_run(experiment_id=os.environ["MLFLOW_EXPERIMENT_ID"]):
        return {
            kind: serving.log_predictor(path, CONFIG, name=f"predictor_{kind}").model_uri
            for kind, path in classifier_files.items()
        }


def tissue_image(size: int = 256) -> np.ndarray:
    """A pink blob on white glass: tissue in the middle, glass around it."""
    image = np.full((size, size, 3), 245, np.uint8)
    yy, xx = np.mgrid[:size, :size]
    blob = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.4 * size) ** 2
    image[blob] = (205, 95, 165)
    return image


def assert_valid_prediction(row: dict, expect_patches: bool = True) -> None:
    assert row["label"] in CLASSES
    probabilities = [row[f"probability_{c}"] for c in CLASSES]
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    assert (row["n_patches"] > 0) is expect_patches
    assert row["selection"] == "ok"
    assert row["low_confidence"] == (max(probabilities) < CONFIG.low_confidence_threshold)


@pytest.mark.parametrize("kind", ["keras", "tflite"])
def test_logged_predictor_loads_back_and_predicts(model_uris, kind):
    model = mlflow.pyfunc.load_model(model_uris[kind])
    blank = np.full((200, 300, 3), 250, np.uint8)
    frame = pd.DataFrame(
        {"image": [serving.encode_image(tissue_image()), serving.encode_image(blank, ".jpg")]}
    )
    result = model.predict(frame)
    assert list(result.columns) == serving.output_columns(CLASSES)
    assert_valid_prediction(result.iloc[0].to_dict())
    no_tissue = result.iloc[1]
    assert no_tissue["label"] == serving.NO_TISSUE
    assert no_tissue["n_patches"] == 0
    assert bool(no_tissue["low_confidence"])


def test_logged_predictor_matches_the_classifier_patch_by_patch(model_uris, classifier_files):
    """Image probability = mean over the tissue patches of the classifier's own output."""
    image = tissue_image()
    patches, _ = Preprocessor(PREPROCESS).patches_for_classifier(image, CONFIG.input_size)
    expected = (
        keras.models.load_model(classifier_files["keras"])
        .predict_on_batch(patches.astype(np.float32))
        .mean(axis=0)
    )
    frame = pd.DataFrame({"image": [serving.encode_image(image)]})
    result = mlflow.pyfunc.load_model(model_uris["keras"]).predict(frame).iloc[0]
    assert result["n_patches"] == len(patches) > 0
    np.testing.assert_allclose([result[f"probability_{c}"] for c in CLASSES], expected, atol=1e-5)


def test_decode_image_accepts_base64_data_uri_and_raw_bytes():
    image = tissue_image(64)
    text = serving.encode_image(image)
    np.testing.assert_array_equal(serving.decode_image(text), image)
    np.testing.assert_array_equal(serving.decode_image("data:image/png;base64," + text), image)
    raw = serving._b64(text)
    np.testing.assert_array_equal(serving.decode_image(raw), image)
    with pytest.raises(ValueError, match="decodable"):
        serving.decode_image("bm90IGFuIGltYWdl")  # base64 of "not an image"


def test_summarise_flags_low_confidence_and_no_tissue():
    row = serving.summarise(np.array([[0.6, 0.4], [0.4, 0.6], [0.5, 0.5]]), CLASSES, 0.6)
    assert row["n_patches"] == 3 and row["low_confidence"]
    row = serving.summarise(np.zeros((0, 2)), CLASSES, 0.6, "not_assessable")
    assert row["label"] == serving.NO_TISSUE and row["probability_ssc"] is None
    assert row["low_confidence"] and row["selection"] == "not_assessable"
    fallback = serving.summarise(np.array([[0.9, 0.1]]), CLASSES, 0.6, "tissue_fallback")
    assert fallback["label"] == "normal" and fallback["low_confidence"]


@pytest.mark.parametrize(
    "value, message",
    [
        ("", "empty image"),
        ("   ", "empty image"),
        (None, "empty image"),
        (3.5, "base64 text"),
        ("bm90IGFuIGltYWdl", "decodable"),
        (b"\xff\xfe\x00", "base64"),
    ],
)
def test_decode_image_refuses_bad_values_with_one_clear_message(value, message):
    with pytest.raises(ValueError, match=message):
        serving.decode_image(value)


def test_decode_image_refuses_a_decompression_bomb_before_decoding():
    """A tiny PNG declaring 15000 x 15000 px is refused from its header alone."""
    bomb = np.zeros((15000, 15000), np.uint8)  # 225 MB here, ~220 kB compressed
    ok, buffer = cv2.imencode(".png", bomb)
    assert ok and len(buffer) < 2_000_000
    text = base64.b64encode(buffer.tobytes()).decode()
    del bomb
    with pytest.raises(ValueError, match="larger than the limit"):
        serving.decode_image(text, max_pixels=64_000_000)
    with pytest.raises(ValueError, match="larger than"):
        serving.decode_image(text, max_bytes=1000)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(url: str, payload: dict | None = None, timeout: float = 30) -> tuple[int, str]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def server(model_uris, tracking_uri, tmp_path) -> Iterator[str]:
    """`mlflow models serve` on the TFLite predictor (no TensorFlow import: starts fastest).

    Its own process group, so the uvicorn worker it spawns is stopped with it.
    """
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    # The CLI execs `uvicorn` by name: the venv's bin must be on PATH even when not activated.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {
        **os.environ,
        "PATH": path,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            model_uris["tflite"],
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
        _wait_for_ping(url, process, tmp_path / "server.log")
        yield url
    finally:
        _stop(process)
        log.close()


def _wait_for_ping(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if http(f"{url}/ping", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(
        f"server did not answer /ping in {SERVER_START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
    )


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the group for a clean shutdown, then SIGKILL whatever of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def test_scoring_server_answers_a_rest_client(server):
    images = [
        serving.encode_image(tissue_image()),
        serving.encode_image(np.full((128, 128, 3), 250, np.uint8)),
    ]
    status, body = http(
        f"{server}/invocations",
        {"dataframe_split": {"columns": ["image"], "data": [[i] for i in images]}},
    )
    assert status == 200, body
    predictions = json.loads(body)["predictions"]
    assert len(predictions) == 2
    assert_valid_prediction(predictions[0])
    assert predictions[1]["label"] == serving.NO_TISSUE
    assert predictions[1]["n_patches"] == 0
    assert predictions[1]["probability_ssc"] is None  # JSON null, not a bare NaN

    status, body = http(
        f"{server}/invocations", {"dataframe_split": {"columns": ["image"], "data": [["bm90"]]}}
    )
    assert status == 400, body
    assert "decodable" in body

    status, body = http(
        f"{server}/invocations", {"dataframe_split": {"columns": ["image"], "data": [[""]]}}
    )
    assert status == 400, body
    assert "empty image" in body and "Traceback" not in body
