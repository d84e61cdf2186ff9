"""The `predict` pipeline on whole-slide images: slide rows, and per run and slide every
output format (heatmaps and QuPath GeoJSON of every task, the tile table)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import jsonschema
import keras
import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from PIL import Image

from ssc_skin.cohort import synthetic
from ssc_skin.imaging import stain
from ssc_skin.inference import export
from ssc_skin.models.builders import build_cnn, build_unet
from ssc_skin.pipelines.predict.nodes import find_new_images
from ssc_skin.pipelines.predict.pipeline import create_pipeline
from ssc_skin.preprocessing.preprocess import PreprocessConfig
from ssc_skin.slides import outputs as slide_outputs
from ssc_skin.slides import synthetic as synthetic_slides
from tests.pipelines.runner import run_pipeline

SIZE, PATCH = 32, 64
BINARY = {"name": "binary", "classes": ["normal", "ssc"]}
THREE = {"name": "three_class", "classes": ["normal", "early", "late"]}
TASKS = {"binary": BINARY, "three_class": THREE}
CNN = {"name": "cnn", "input_size": SIZE}
# Today's params differ from the training run's on purpose: slides must be cut as trained.
PATCHES = {
    "patch_size": 96,
    "stride": 96,
    "min_tissue_fraction": 0.5,
    "min_saturation": 12,
    "target_microns_per_pixel": 4.0,
}
SOURCE = {"patient_id_regex": "^(?P<patient>[A-Za-z0-9]+)", "tiff_page": 0}
CHECKS = {"min_tissue_fraction": 0.05}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Patient SMITH07 with a slide (Aperio, mpp 0.5) and a plain image; a slide without any
    mpp; a truncated slide."""
    root = tmp_path_factory.mktemp("new_slides")
    synthetic_slides.write_synthetic_slide(
        root / "SMITH07_1.svs", 1600, 1200, 2, "late", mpp=0.5, seed=1
    )
    synthetic_slides.write_synthetic_slide(
        root / "JONES42_1.tif", 1600, 1200, 2, mpp=None, style="generic", seed=2
    )
    synthetic_slides.truncated_copy(root / "SMITH07_1.svs", root / "DOE99_1.svs")
    patient = synthetic.make_patient("x", "normal", np.random.default_rng(4))
    Image.fromarray(synthetic.render_section(patient, 0, (192, 192), artefact_rate=0.0).image).save(
        root / "SMITH07_a.png"
    )
    return root


@pytest.fixture(scope="module")
def study():
    keras.utils.set_random_seed(0)
    classifier = build_cnn(input_size=SIZE, n_classes=2, filters=(8,), dense_units=8)
    three = build_cnn(input_size=SIZE, n_classes=3, filters=(8,), dense_units=8)
    unet = export.to_tflite(build_unet(32, 4, base_filters=4, depth=2))
    patient = synthetic.make_patient("x", "normal", np.random.default_rng(9))
    section = synthetic.render_section(patient, 0, (192, 192), artefact_rate=0.0).image
    config = PreprocessConfig(
        patch_size=64,
        stride=64,
        unet_input_size=32,
        normalizer=stain.fit_normalizer("macenko", [section]).to_dict(),
        min_dermis_fraction=0.0,
        slide={"target_microns_per_pixel": 2.0, "batch_size": 8},
    )
    trained = {"binary.cnn": _Trained(classifier), "three_class.cnn": _Trained(three)}
    return config.to_dict(), unet, trained


class _Trained:
    """What `TrainedModelsDataset` gives for one model (Keras only, not exported)."""

    def __init__(self, model: keras.Model) -> None:
        self.name, self.tflite, self.export_summary, self.skipped = "cnn", None, None, None
        self.keras = lambda: model


def _params(path: Path) -> dict:
    return {
        "input": str(path),
        "architecture": "cnn",
        "runtime": "keras",
        "tasks": None,
        "patient_ids": True,
        "patient_id_regex": None,
        "low_confidence_threshold": 0.6,
        "gradcam_images": 2,
        "num_threads": 2,
    }


def _run(study, path: Path, source: dict) -> object:
    config, unet, trained = study
    return run_pipeline(
        create_pipeline(),
        {
            "preprocess_config": config,
            "unet_tflite": unet,
            "trained_models": trained,
            "params:predict": _params(path),
            "params:cohort.source": source,
            "params:cohort.checks": CHECKS,
            "params:patches": PATCHES,
            "params:classification.tasks": TASKS,
            "params:classification.architectures": {"cnn": CNN},
            "params:cohort.source.tiff_page": 0,
            "params:engine": {"kind": "sequential"},
        },
    )


@pytest.fixture(scope="module")
def catalog(inputs, study):
    return _run(study, inputs, SOURCE)


def test_slides_get_rows_of_kind_slide_and_join_their_patient(catalog, inputs):
    table = catalog.load("new_image_predictions")
    images = catalog.load("new_images")
    assert sorted(images["kind"]) == ["image", "slide"]
    rows = table[(table["level"] == "image") & (table["task"] == "binary")]
    assert sorted(rows["kind"]) == ["image", "slide"]
    slide = rows[rows["kind"] == "slide"].iloc[0]
    assert slide["mpp_source"] == "metadata" and slide["microns_per_pixel"] == pytest.approx(0.5)
    assert slide["n_patches"] > 0 and slide["n_tissue_patches"] >= slide["n_patches"]
    assert slide["probability_normal"] + slide["probability_ssc"] == pytest.approx(1, abs=1e-4)
    patient = table[(table["level"] == "patient") & (table["task"] == "binary")]
    assert len(patient) == 1 and patient["kind"].iloc[0] == "image+slide"
    assert patient["n_images"].iloc[0] == 2
    weights = rows["n_patches"] / rows["n_patches"].sum()  # every patch counts once
    assert patient["probability_ssc"].iloc[0] == pytest.approx(
        (rows["probability_ssc"] * weights).sum()
    )
    quarantine = catalog.load("predict_quarantine").to_csv()  # names kept, ids hidden
    for raw in ("SMITH07", "JONES42", "DOE99", str(inputs)):
        assert raw not in table.to_csv() and raw not in quarantine
    assert ".svs" not in table.to_csv()


def test_slide_quarantine_says_no_mpp_and_truncated(catalog):
    quarantine = catalog.load("predict_quarantine")
    assert sorted(quarantine["check"]) == ["no_mpp", "truncated"]
    assert "microns_per_pixel" in quarantine.loc[quarantine["check"] == "no_mpp", "reason"].iloc[0]


def test_fallback_mpp_admits_the_slide_without_metadata(inputs, study):
    config, _, _ = study
    images, quarantine, _ = find_new_images(
        _params(inputs / "JONES42_1.tif"),
        {**SOURCE, "microns_per_pixel": 0.5},
        CHECKS,
        config,
    )
    assert list(images["kind"]) == ["slide"] and quarantine.empty


def _run_files(catalog) -> tuple[str, dict[str, bytes]]:
    files = catalog.load("predict_runs")
    run = json.loads(files["latest.json"])["run_id"]
    return run, files


def test_every_task_gets_a_heatmap_and_a_qupath_geojson_per_slide(catalog):
    table = catalog.load("new_image_predictions")
    slide = table[(table["level"] == "image") & (table["kind"] == "slide")]
    name = slide["image"].iloc[0]
    run, files = _run_files(catalog)
    folder = f"{run}/slides/{name}/"
    assert {p[len(folder) :] for p in files if p.startswith(folder)} == {
        "heatmap_binary.png",
        "heatmap_three_class.png",
        "qupath_binary.geojson",
        "qupath_three_class.geojson",
        "tiles.csv",
    }
    for task in TASKS:
        heatmap = np.asarray(Image.open(io.BytesIO(files[f"{folder}heatmap_{task}.png"])))
        assert heatmap.ndim == 3 and heatmap.dtype == np.uint8
        collection = json.loads(files[f"{folder}qupath_{task}.geojson"])
        jsonschema.validate(collection, slide_outputs.QUPATH_GEOJSON_SCHEMA)
        features = collection["features"]
        [tissue] = [f for f in features if f["properties"]["objectType"] == "annotation"]
        assert set(tissue["properties"]["measurements"]) == {
            "binary: P(normal)",
            "binary: P(ssc)",
            "three_class: P(normal)",
            "three_class: P(early)",
            "three_class: P(late)",
        }
        detections = [f for f in features if f["properties"]["objectType"] == "detection"]
        row = slide[slide["task"] == task].iloc[0]
        scored = [
            d for d in detections if d["properties"]["classification"]["name"] != "Not scored"
        ]
        assert len(scored) == row["n_patches"]
        classes = {d["properties"]["classification"]["name"] for d in scored}
        assert classes <= set(TASKS[task]["classes"])
        ring = detections[0]["geometry"]["coordinates"][0]
        assert ring[1][0] - ring[0][0] == pytest.approx(64 * 2.0 / 0.5, abs=1)  # as trained


def test_gradcam_skips_slides(catalog):
    figure = catalog.load("new_image_gradcam")
    assert sum(ax.get_visible() for ax in figure.axes) == 1  # the plain image only


def _runs_dataset(path: Path):
    """`predict_runs` exactly as conf/base declares it, in a temporary folder."""
    conf = Path(__file__).parents[3] / "conf" / "base" / "catalog_export_predict.yml"
    entry = yaml.safe_load(conf.read_text())["predict_runs"]
    return DataCatalog.from_config({"predict_runs": {**entry, "path": str(path)}})


def test_a_second_run_keeps_the_first_runs_outputs(catalog, inputs, study, tmp_path):
    """Finding 9: a run used to delete the previous run's heatmaps and GeoJSON."""
    runs = _runs_dataset(tmp_path / "predict")
    runs.save("predict_runs", catalog.load("predict_runs"))
    first, _ = _run_files(catalog)
    again = _run(study, inputs, SOURCE)
    runs.save("predict_runs", again.load("predict_runs"))
    second, _ = _run_files(again)
    assert first != second
    for run in (first, second):
        assert (tmp_path / "predict" / run / "predictions.csv").is_file()
        assert list((tmp_path / "predict" / run / "slides").rglob("*.geojson"))
        assert (tmp_path / "predict" / run / "run.json").is_file()
    latest = json.loads((tmp_path / "predict" / "latest.json").read_text())
    assert latest["run_id"] == second


def test_images_only_input_gives_no_slide_outputs(inputs, study, tmp_path):
    (tmp_path / "SMITH07_a.png").write_bytes((inputs / "SMITH07_a.png").read_bytes())
    catalog = _run(study, tmp_path, SOURCE)
    assert catalog.load("slide_results") == {}
    run, files = _run_files(catalog)
    assert not [p for p in files if "/slides/" in p] and f"{run}/predictions.csv" in files
    assert set(catalog.load("new_image_predictions")["kind"]) == {"image"}
    assert isinstance(catalog.load("new_image_predictions"), pd.DataFrame)


def test_the_pipeline_runs_through_the_catalog_as_declared(inputs, study, tmp_path):
    """predict's outputs exactly as conf/base declares them (paths moved to tmp_path): the
    in-memory setup and slide results are passed as they are, the run folder is written."""
    conf = Path(__file__).parents[3] / "conf" / "base" / "catalog_export_predict.yml"
    entries = yaml.safe_load(conf.read_text())
    pipeline = create_pipeline()
    outputs = pipeline.all_outputs()
    config = {}
    for name in outputs & set(entries):  # new_images: Kedro's default memory dataset
        entry = dict(entries[name])
        for key in ("filepath", "path"):
            if key in entry:
                entry[key] = str(tmp_path / Path(entry[key]).relative_to("data"))
        config[name] = entry
    catalog = DataCatalog.from_config(config)
    setup_config, unet, trained = study
    feeds = {
        "preprocess_config": setup_config,
        "unet_tflite": unet,
        "trained_models": trained,
        "params:predict": _params(inputs),
        "params:cohort.source": SOURCE,
        "params:cohort.checks": CHECKS,
        "params:classification.tasks": TASKS,
        "params:classification.architectures": {"cnn": CNN},
        "params:engine": {"kind": "sequential"},
    }
    for name, value in feeds.items():
        catalog[name] = MemoryDataset(value, copy_mode="assign")
    SequentialRunner().run(pipeline, catalog)
    runs = tmp_path / "07_model_output" / "predict"
    run = json.loads((runs / "latest.json").read_text())["run_id"]
    assert (runs / run / "predictions.csv").is_file() and (runs / run / "gradcam.png").is_file()
    assert len(list((runs / run / "slides").rglob("qupath_*.geojson"))) == len(TASKS)
    assert (tmp_path / "08_reporting" / "predictions" / "predictions.csv").is_file()
