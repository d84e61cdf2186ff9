"""Whole-slide images end to end: a slide cohort set by configuration alone runs the study
(`kedro run --env test`), then `predict` on one slide, in a temporary copy of the project."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from ssc_skin.slides import synthetic as synthetic_slides
from tests.helpers import copy_project, kedro, scannable_text

PATIENT_IDS = [f"S{n:04d}" for n in range(1, 10)] + ["S0100", "S0101"]
TEXT_SUFFIXES = {".csv", ".json", ".geojson", ".md", ".html", ".yml", ".yaml", ".txt"}


def _kedro_run(project: Path, *args: str) -> subprocess.CompletedProcess:
    result = kedro(project, "run", "--env", "test", *args)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return result


def _slide_cohort(root: Path) -> Path:
    """Three patients per class, one slide each at 0.5 um/px (Aperio); S0001 has a second
    slide; a slide without any mpp (S0100) and a truncated copy (S0101)."""
    synthetic_slides.write_slide_cohort(
        root,
        {"normal": 3, "early": 3, "late": 3},
        width=1600,
        height=1200,
        sections=2,
        mpp=0.5,
        seed=7,
    )
    (root / "manifest.csv").unlink()  # a folder layout: <root>/<label>/<slide>
    synthetic_slides.write_synthetic_slide(
        root / "normal" / "S0001_2.svs", 1600, 1200, 2, "normal", "S0001", mpp=0.5, seed=11
    )
    synthetic_slides.write_synthetic_slide(
        root / "late" / "S0100_1.tif",
        1600,
        1200,
        2,
        "late",
        "S0100",
        mpp=None,
        style="generic",
        seed=12,
    )
    synthetic_slides.truncated_copy(root / "early" / "S0004_1.svs", root / "early" / "S0101_1.svs")
    return root


def _configure(project: Path, root: Path) -> None:
    """The slide layout in the copy's test environment: configuration only, no code."""
    path = project / "conf" / "test" / "parameters.yml"
    params = yaml.safe_load(path.read_text())
    params["cohort"]["source"] = {"layout": "slide_folder", "root": str(root)}
    params["patches"]["target_microns_per_pixel"] = 2.0
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def slide_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    root = _slide_cohort(tmp_path_factory.mktemp("user") / "my slides")
    project = copy_project(tmp_path_factory.mktemp("project"))
    _configure(project, root)
    study = _kedro_run(project, "--pipeline", "single_split")  # the slide path, not the folds
    one = root / "normal" / "S0001_2.svs"
    predicted = _kedro_run(project, "--pipeline", "predict", "--params", f"predict.input={one}")
    return project, root, study.stdout + study.stderr + predicted.stdout + predicted.stderr


@pytest.mark.e2e
def test_slide_cohort_runs_the_study_with_quarantine(slide_project):
    project, _, _ = slide_project
    quarantine = pd.read_csv(project / "data/08_reporting/quarantine.csv")
    assert sorted(quarantine["check"]) == ["no_mpp", "truncated"]
    manifest = pd.read_csv(project / "data/02_intermediate/manifest.csv")
    assert set(manifest["kind"]) == {"slide"} and len(manifest) == 10  # S0001 has two
    assert manifest["patient"].nunique() == 9
    index = pd.read_parquet(project / "data/05_model_input/patch_index.parquet")
    assert index["split"].value_counts().reindex(["train", "val", "test"]).gt(0).all()
    assert {"x0", "y0", "size0"} <= set(index.columns)
    assert (index["size0"] == 256).all()  # 64 px at 2 um/px from a 0.5 um/px slide
    assert (project / "data/08_reporting/report.md").read_text().startswith("# ssc-skin")


@pytest.mark.e2e
def test_predict_on_one_slide_writes_rows_heatmap_and_qupath_geojson(slide_project):
    project, _, _ = slide_project
    table = pd.read_csv(project / "data/08_reporting/predictions/predictions.csv")
    slides = table[table["level"] == "image"]
    assert set(slides["kind"]) == {"slide"} and slides["image"].nunique() == 1
    patients = table[table["level"] == "patient"]
    assert len(patients) == slides["task"].nunique() and set(patients["kind"]) == {"slide"}
    name = slides["image"].iloc[0]
    runs = project / "data/07_model_output/predict"  # one folder per run, latest.json names it
    output = runs / json.loads((runs / "latest.json").read_text())["run_id"] / "slides" / name
    first = slides.iloc[0]  # every task draws the slide; check the first
    heatmap = np.asarray(Image.open(output / f"heatmap_{first['task']}.png"))
    assert heatmap.ndim == 3 and min(heatmap.shape[:2]) > 10
    collection = json.loads((output / f"qupath_{first['task']}.geojson").read_text())
    assert collection["type"] == "FeatureCollection"
    kinds = [f["properties"]["objectType"] for f in collection["features"]]
    scored = [
        f
        for f in collection["features"]
        if f["properties"]["objectType"] == "detection"
        and f["properties"]["classification"]["name"] != "Not scored"
    ]
    assert len(scored) == first["n_patches"] > 0
    assert kinds.count("annotation") == 1  # the tissue outline
    for feature in collection["features"]:
        assert {"geometry", "properties"} <= set(feature)
        assert {"objectType", "classification", "measurements"} <= set(feature["properties"])


@pytest.mark.e2e
def test_no_patient_id_or_user_path_outside_the_linkage(slide_project):
    project, root, logs = slide_project
    linkage = {"linkage.csv", "predict_linkage.csv"}
    leaks = []
    for path in (project / "data").rglob("*"):
        if path.suffix in TEXT_SUFFIXES and path.name not in linkage and path.is_file():
            text = scannable_text(path)
            leaks += [
                f"{path.relative_to(project)}: {raw}"
                for raw in [*PATIENT_IDS, str(root)]
                if raw in text
            ]
    leaks += [f"logs: {raw}" for raw in [*PATIENT_IDS, str(root)] if raw in logs]
    assert not leaks
