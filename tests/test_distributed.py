"""The fan-out engine: order, laziness, errors and shutdown, in process and on Dask; and
`predict` over a 2-worker LocalCluster giving the sequential result."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ssc_skin import distributed
from ssc_skin.cohort import synthetic
from ssc_skin.datasets import TrainedModelsDataset
from ssc_skin.distributed import EngineConfig, map_ordered
from ssc_skin.imaging import stain
from ssc_skin.inference import export
from ssc_skin.models.builders import build_cnn, build_unet
from ssc_skin.pipelines.predict.nodes import (
    find_new_images,
    load_predict_setup,
    predict_new_inputs,
)
from ssc_skin.preprocessing import cutting
from ssc_skin.preprocessing.preprocess import PreprocessConfig, Preprocessor
from tests.distributed_tasks import add_shared, fail_on_three, pid_after, square_after

pytest.importorskip("distributed")


class Counting:
    """An iterable that records how many items were taken from it."""

    def __init__(self, items: list) -> None:
        self.items, self.taken = items, 0

    def __iter__(self):
        for item in self.items:
            self.taken += 1
            yield item


@pytest.fixture(scope="module")
def cluster():
    """One 2-worker LocalCluster of processes for the module, reached by its address (the
    `scheduler:` path); the default path (a cluster per call) has its own test."""
    from distributed import LocalCluster  # noqa: PLC0415

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.WARNING,
        scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
    ) as local:
        yield EngineConfig(kind="dask", scheduler=local.scheduler_address)


SEQUENTIAL = EngineConfig()


# --- the engine setting ---------------------------------------------------------------------


def test_engine_config_names_every_bad_key_at_once():
    with pytest.raises(ValueError) as error:
        EngineConfig.from_dict(
            {"kind": "spark", "n_workers": 0, "schedular": "x", "scheduler": "host:8786"}
        )
    message = str(error.value)
    for key in ("engine.kind", "engine.n_workers", "engine.schedular", "engine.scheduler"):
        assert key in message
    assert EngineConfig.from_dict(None) == EngineConfig()
    assert EngineConfig.from_dict({"kind": "dask"}).window() == 4


def test_map_ordered_checks_the_engine_before_the_first_item():
    with pytest.raises(ValueError, match="engine.kind"):
        map_ordered(square_after, [], {"kind": "threads"})


def test_dask_needs_a_top_level_function_and_picklable_arguments():
    dask = EngineConfig(kind="dask")
    with pytest.raises(TypeError, match="top-level function"):
        map_ordered(lambda x: x, [1], dask)
    with pytest.raises(TypeError, match="cannot be pickled"):
        map_ordered(add_shared, [1], dask, shared={"lock": threading.Lock()})


# --- sequential ------------------------------------------------------------------------------


def test_sequential_is_ordered_lazy_and_raises_in_order():
    items = Counting([(v, 0.0) for v in range(5)])
    results = map_ordered(square_after, items, SEQUENTIAL)
    assert items.taken == 0  # nothing runs before the first next()
    assert next(results) == 0 and items.taken == 1
    assert list(results) == [1, 4, 9, 16]
    results = map_ordered(fail_on_three, range(6), SEQUENTIAL)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad item 3"):
        next(results)


def test_progress_is_logged_as_items_per_second(caplog):
    with caplog.at_level(logging.INFO, logger="ssc_skin.distributed"):
        assert list(
            map_ordered(
                add_shared, range(20), SEQUENTIAL, shared={"offset": 1}, total=20, label="images"
            )
        ) == list(range(1, 21))
    lines = [r.getMessage() for r in caplog.records if "images/s" in r.getMessage()]
    assert len(lines) == 10 and lines[-1].startswith("Images: 20/20")


# --- on Dask --------------------------------------------------------------------------------


def test_dask_yields_in_input_order_when_later_items_finish_first(cluster):
    items = [(v, 0.3 - 0.05 * v) for v in range(6)]
    assert list(map_ordered(square_after, items, cluster)) == [v * v for v in range(6)]


def test_dask_reads_items_at_most_the_window_ahead(cluster):
    window = EngineConfig(kind="dask", scheduler=cluster.scheduler, max_in_flight=3)
    items = Counting([(v, 0.0) for v in range(10)])
    results = map_ordered(square_after, items, window)
    assert next(results) == 0
    assert items.taken == 3  # the first result needed three submitted, not ten
    assert next(results) == 1 and items.taken == 4
    assert list(results) == [v * v for v in range(2, 10)]


def test_dask_raises_the_items_error_after_the_results_before_it(cluster):
    results = map_ordered(fail_on_three, range(8), cluster)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad item 3"):
        next(results)


def test_dask_sends_shared_arguments(cluster):
    assert list(map_ordered(add_shared, range(5), cluster, shared={"offset": 10})) == [
        10,
        11,
        12,
        13,
        14,
    ]


def test_default_local_cluster_uses_two_worker_processes_and_shuts_them_down():
    pids = list(map_ordered(pid_after, [0.3] * 6, {"kind": "dask", "n_workers": 2}))
    workers = set(pids)
    assert len(workers) == 2 and os.getpid() not in workers
    deadline = time.monotonic() + 15
    alive = set(workers)
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if _alive(pid)}
        time.sleep(0.2)
    assert not alive, "LocalCluster workers outlived the fan-out"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        Path(f"/proc/{pid}/status").exists()
        and "zombie" not in Path(f"/proc/{pid}/status").read_text()
    )


def test_worker_cache_builds_once_per_key():
    calls = []
    for _ in range(3):
        value = distributed.worker_cached("test-key", lambda: calls.append(1) or len(calls))
    assert value == 1 and calls == [1]
    assert distributed.digest(b"a", "b") != distributed.digest(b"ab")


# --- predict fanned out ----------------------------------------------------------------------

SIZE, PATCH = 32, 64
TASKS = {
    "binary": {"name": "binary", "classes": ["normal", "ssc"]},
    "three_class": {"name": "three_class", "classes": ["normal", "early", "late"]},
}
ARCHITECTURES = {"cnn": {"name": "cnn", "input_size": SIZE}}
PATCHES = {"patch_size": PATCH, "stride": PATCH, "min_tissue_fraction": 0.5, "min_saturation": 12}
SAVED = PreprocessConfig(patch_size=PATCH, stride=PATCH)  # the training run's preprocess.json
SOURCE = {"patient_id_regex": "^(?P<patient>[A-Za-z0-9]+)", "tiff_page": 0}
CHECKS = {"min_tissue_fraction": 0.05}


def _section(label: str, seed: int) -> np.ndarray:
    patient = synthetic.make_patient("x", label, np.random.default_rng(seed))
    return synthetic.render_section(patient, 0, (192, 192), artefact_rate=0.0).image


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Five new images of three patients; both tasks' CNNs exported to TFLite; a TFLite UNet
    and a fitted stain normaliser."""
    root = tmp_path_factory.mktemp("images")
    for n, (name, label) in enumerate(
        [
            ("AB1_a", "normal"),
            ("AB1_b", "late"),
            ("CD2_a", "early"),
            ("EF3_a", "late"),
            ("EF3_b", "normal"),
        ]
    ):
        Image.fromarray(_section(label, n)).save(root / f"{name}.png")
    models, reports = tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("reports")
    for seed, task in enumerate(TASKS.values()):
        keras.utils.set_random_seed(seed)
        model = build_cnn(
            input_size=SIZE, n_classes=len(task["classes"]), filters=(8,), dense_units=8
        )
        model.save(models / f"{task['name']}.cnn.keras")
        (models / f"{task['name']}.cnn.float32.tflite").write_bytes(export.to_tflite(model))
    keras.utils.set_random_seed(0)
    unet = export.to_tflite(build_unet(32, 4, base_filters=4, depth=2))
    normalizer = stain.fit_normalizer("macenko", [_section("normal", 9)]).to_dict()
    config = PreprocessConfig(
        patch_size=PATCH,
        stride=PATCH,
        normalizer=normalizer,
        unet_input_size=32,
        min_dermis_fraction=0.5,
    ).to_dict()
    return root, config, unet, TrainedModelsDataset(str(models), str(reports)).load()


def _predict(study, engine, runtime: str = "tflite") -> pd.DataFrame:
    root, config, unet, trained = study
    params = {
        "input": str(root),
        "architecture": "cnn",
        "runtime": runtime,
        "tasks": None,
        "patient_ids": True,
        "patient_id_regex": None,
        "low_confidence_threshold": 0.6,
        "gradcam_images": 0,
        "num_threads": 2,
    }
    images, _, _ = find_new_images(params, SOURCE, CHECKS, SAVED)
    setup = load_predict_setup(config, unet, trained, params, TASKS, ARCHITECTURES, SOURCE, engine)
    return predict_new_inputs(images, setup)[0]


def _same(left: pd.DataFrame, right: pd.DataFrame) -> None:
    probabilities = [c for c in left.columns if c.startswith("probability_")]
    pd.testing.assert_frame_equal(
        left.drop(columns=probabilities), right.drop(columns=probabilities)
    )
    np.testing.assert_allclose(
        left[probabilities].to_numpy(float), right[probabilities].to_numpy(float), atol=1e-6, rtol=0
    )


def test_predict_on_a_two_worker_local_cluster_equals_the_sequential_run(study, cluster):
    sequential = _predict(study, {"kind": "sequential"})
    fanned = _predict(study, cluster.to_dict())
    assert (sequential["level"] == "image").sum() == 5 * 2
    assert (sequential["n_patches"] > 0).all()
    assert set(fanned["runtime"]) == {export.FLOAT32}
    _same(sequential, fanned)


def test_a_keras_task_keeps_predict_in_the_driver_and_says_why(study, caplog):
    with caplog.at_level(logging.INFO):
        table = _predict(study, {"kind": "dask", "n_workers": 2}, runtime="keras")
    assert set(table["runtime"]) == {export.KERAS} and len(table) == 5 * 2 + 3 * 2
    assert any(
        "run on Keras" in r.getMessage() and "in this process" in r.getMessage()
        for r in caplog.records
    )


def test_patch_cutting_on_workers_equals_the_preprocessor(study, cluster):
    _, config, _, _ = study
    images = [_section("late", 1), _section("normal", 2)]
    masks = [np.full(images[0].shape[:2], 2, np.uint8), None]
    cut = list(
        map_ordered(
            cutting.cut_image_on_worker,
            zip(images, masks, strict=True),
            cluster,
            shared=cutting.cut_work(config),
        )
    )
    preprocessor = Preprocessor(PreprocessConfig.from_dict(config))
    for image, mask, result in zip(images, masks, cut, strict=True):
        patches, tiles = preprocessor.cut(image)
        assert result.tiles == tiles and len(tiles) > 0
        np.testing.assert_array_equal(result.patches, patches)
        assert result.masks.shape == (len(tiles), PATCH, PATCH)
        assert (result.masks == (2 if mask is not None else 0)).all()
