"""The whole study, `kedro run --env test`, in a temporary copy of the project."""

import hashlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from ssc_skin.cohort import synthetic
from ssc_skin.evaluation import report_html
from ssc_skin.evaluation.comparison import display_name
from tests.helpers import copy_project, kedro, logged_report_problems, scannable_text

PROJECT = Path(__file__).resolve().parents[1]
MODELS = ("binary.mobilenetv2", "binary.cnn", "three_class.mobilenetv2", "three_class.cnn")


def _kedro_run(project: Path, *args: str) -> subprocess.CompletedProcess:
    """The single train / val / test study (`single_split`); the default run, the pooled
    cross-validation with its final fit, is tested in tests/pipelines/cv/test_fold_isolation."""
    if "--pipeline" not in args:
        args = ("--pipeline", "single_split", *args)
    result = kedro(project, "run", "--env", "test", *args)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return result


@pytest.fixture(scope="module")
def finished_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = copy_project(tmp_path_factory.mktemp("project"))
    _kedro_run(project)
    return project


@pytest.mark.e2e
def test_report_and_models_are_written(finished_project: Path):
    report = (finished_project / "data/08_reporting/report.md").read_text()
    assert report.startswith("# ssc-skin study report")
    for model in MODELS:
        task, arch = model.split(".")
        assert f"| {task} | {display_name(arch)} |" in report
        assert (finished_project / f"data/06_models/{model}.keras").stat().st_size > 10_000
    assert (finished_project / "data/06_models/unet.keras").exists()
    assert "Colour-only baseline" in report
    gallery = finished_project / "data/08_reporting/cohort_gallery.png"
    assert gallery.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    baseline = json.loads((finished_project / "data/08_reporting/colour_baseline.json").read_text())
    assert set(baseline) == {"binary", "three_class"}


@pytest.mark.e2e
def test_evaluation_pictures_and_html_report_are_written(finished_project: Path):
    reporting = finished_project / "data/08_reporting"
    pictures = [
        "confusion_matrices.png",
        "roc_curves.png",
        "training_curves.png",
        "segmentation_overlays.png",
        *(f"{m}/gradcam.png" for m in MODELS),
    ]
    for name in pictures:
        assert (reporting / name).read_bytes()[:4] == b"\x89PNG", name
    html = (reporting / "report.html").read_text()
    assert html.count("<table>") >= 4 and 'alt="Confusion matrices' in html
    assert 'src="data:image/png;base64,' in html and 'src="confusion_matrices.png"' not in html
    evaluation = json.loads((reporting / "three_class.cnn/evaluation.json").read_text())
    assert len(evaluation["test_patient_confusion"]) == 3
    assert {"test_patient_sensitivity_late", "test_patient_specificity_normal"} <= set(evaluation)
    normalizer = json.loads(
        (finished_project / "data/04_feature/stain_normalizer.json").read_text()
    )
    assert normalizer["method"] == "macenko"
    assert pd.read_csv(reporting / "quarantine.csv").empty  # the synthetic cohort is clean


@pytest.fixture(scope="module")
def mlflow_runs(finished_project: Path) -> tuple[mlflow.MlflowClient, list]:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{finished_project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ssc_skin")
    return client, client.search_runs([experiment.experiment_id])


@pytest.mark.e2e
def test_mlflow_holds_one_finished_run_with_every_models_metrics(mlflow_runs):
    client, runs = mlflow_runs
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    run = parents[0]
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for model in MODELS:  # the parent holds each model's headline, grouped by model
        for name in ("test_patient_accuracy", "test_patient_auc", "train_seconds"):
            assert f"{model}/{name}" in metrics, f"{model}/{name} missing"
    assert "segmentation.test_dermis_dice" in metrics
    assert "colour_baseline.binary.accuracy" in metrics
    assert "time/pipeline_seconds" in metrics
    # not every number of every model: those are in the nested runs
    assert not any(name.startswith("binary.cnn.test_") for name in metrics)
    assert len(metrics) < 150, len(metrics)
    timing = client.download_artifacts(run.info.run_id, "timing/node_seconds.json")
    node_seconds = json.loads(Path(timing).read_text())
    assert {f"{m}.train_classifier" for m in MODELS} | {"generate_synthetic_cohort"} <= set(
        node_seconds
    )
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.md", "cohort_gallery.png"} <= artifacts
    models = {a.path for a in client.list_artifacts(run.info.run_id, "models")}
    assert {f"models/{m}.keras" for m in MODELS} <= models


@pytest.mark.e2e
def test_the_logged_report_html_embeds_every_figure_report_md_links(mlflow_runs, tmp_path):
    client, runs = mlflow_runs
    (run,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    for artifact in client.list_artifacts(run.info.run_id):
        if artifact.path != "models":  # the report's folders and files, not the models
            client.download_artifacts(run.info.run_id, artifact.path, str(tmp_path))
    assert logged_report_problems(tmp_path) == []
    assert report_html.image_links((tmp_path / "report.md").read_text())  # it has figures


@pytest.mark.e2e
def test_patient_ids_do_not_reach_outputs(finished_project: Path):
    raw = pd.read_csv(finished_project / "data/01_raw/synthetic/manifest.csv")
    patient_ids = set(raw["patient_id"])
    assert patient_ids  # the raw cohort knows its patients; only the local linkage table may
    linkage = finished_project / "data/02_intermediate/linkage.csv"
    assert set(pd.read_csv(linkage)["patient_id"]) == patient_ids
    texts = []
    for path in (finished_project / "data").rglob("*"):
        if path.is_file() and "01_raw" not in path.parts and path != linkage:
            if path.suffix in {".csv", ".md", ".json", ".html"}:
                texts.append((path, scannable_text(path)))
            elif path.suffix == ".parquet":
                texts.append((path, pd.read_parquet(path).to_csv()))
    assert len(texts) > 5
    for path, text in texts:
        leaked = [pid for pid in patient_ids if pid in text]
        assert not leaked, f"{path} contains patient ids {leaked[:3]}"


@pytest.mark.e2e
def test_viz_build_shows_the_four_classification_namespaces(finished_project: Path):
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "viz", "build"],
        check=False,
        cwd=finished_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    graph = json.loads((finished_project / "build/api/main").read_text())
    assert {f"{m}" for m in MODELS} <= set(graph["modular_pipelines"])


@pytest.mark.e2e
def test_each_model_has_a_nested_run_with_the_same_metric_names(mlflow_runs):
    _, runs = mlflow_runs
    children = {r.info.run_name: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert set(MODELS) <= set(children)  # the texture peers have nested runs too
    names = [set(r.data.metrics) for r in children.values()]
    binary = set(children["binary.cnn"].data.metrics)
    assert {"test/patient_accuracy", "test/patient_auc", "train/seconds"} <= binary
    assert all("/" in name for name in binary)  # one chart section per split
    assert "input_size" in children["binary.cnn"].data.params  # static values are params
    assert binary == set(children["binary.mobilenetv2"].data.metrics)
    assert all(len(n) > 20 for n in names)
    assert children["binary.cnn"].data.params["architecture"] == "cnn"


@pytest.mark.e2e
def test_each_nested_run_logs_its_model_with_the_keras_flavour(mlflow_runs, finished_project):
    _, runs = mlflow_runs
    child = next(r for r in runs if r.info.run_name == "binary.cnn")
    mlflow.set_tracking_uri(f"sqlite:///{finished_project / 'mlflow.db'}")
    # The logged network includes the test-time augmentation layer (`OrientedViews`): Keras
    # finds it once the project's module that registers it is imported, as in every project
    # code path. Imported here, so the test does not depend on what earlier tests imported.
    importlib.import_module("ssc_skin.models.tta")
    model = mlflow.pyfunc.load_model(child.data.tags["model_uri"])
    assert model.metadata.flavors.keys() >= {"keras", "python_function"}


@pytest.mark.e2e
def test_comparison_notebook_plots_the_latest_runs_models(finished_project: Path):
    out = finished_project / "data/08_reporting/model_comparison.png"
    result = subprocess.run(
        [
            sys.executable,
            str(PROJECT / "notebooks/compare_models.py"),
            "--tracking-uri",
            f"sqlite:///{finished_project / 'mlflow.db'}",
            "--out",
            str(out),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for model in MODELS:
        assert model in result.stdout
    assert out.read_bytes()[:4] == b"\x89PNG"


def _binary_folder_cohort(root: Path) -> None:
    """A user's normal-vs-SSc cohort, no masks, patient ids in file names, bad files planted."""
    for label, folder in (("normal", "Normal"), ("late", "SSc")):
        for p in range(3):
            patient = synthetic.make_patient(f"{folder}{p}", label, np.random.default_rng(p))
            for i in range(2):
                section = synthetic.render_section(patient, i, (192, 192), artefact_rate=0.0)
                path = root / folder / f"{folder.upper()}00{p}_{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(section.image).save(path)
    (root / "SSc" / "SSC009_cut.png").write_bytes(
        (root / "SSc" / "SSC000_0.png").read_bytes()[:900]
    )
    (root / "Normal" / "NORMAL009_x.jpg").write_bytes(b"")
    (root / "Normal" / "notes.txt").write_text("stained 2019")
    for path in root.rglob("*"):
        path.chmod(0o555 if path.is_dir() else 0o444)


def _checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def own_cohort_project(tmp_path_factory: pytest.TempPathFactory):
    cohort = tmp_path_factory.mktemp("their_cohort")
    _binary_folder_cohort(cohort)
    before = _checksums(cohort)
    project = copy_project(tmp_path_factory.mktemp("project"))
    # `--env test` replaces conf/local, so the user's cohort goes into the test environment
    params_file = project / "conf/test/parameters.yml"
    params = yaml.safe_load(params_file.read_text())
    params["cohort"]["source"] = {
        "layout": "folder",
        "root": str(cohort),
        "label_map": {"Normal": "normal", "SSc": "ssc"},
    }
    params_file.write_text(yaml.safe_dump(params))
    result = _kedro_run(project)
    yield project, cohort, before, result
    for path in cohort.rglob("*"):
        path.chmod(0o755)


@pytest.mark.e2e
def test_own_binary_folder_cohort_runs_by_configuration_alone(own_cohort_project):
    project, cohort, before, result = own_cohort_project
    assert _checksums(cohort) == before  # nothing in the user's folder changed
    assert not list((project / "data/01_raw/synthetic").rglob("*.png"))
    quarantine = pd.read_csv(project / "data/08_reporting/quarantine.csv")
    assert dict(zip(quarantine["check"], quarantine["file"], strict=True)).keys() == {
        "truncated",
        "empty_file",
        "not_image_extension",
    }
    manifest = pd.read_csv(project / "data/02_intermediate/manifest.csv")
    assert len(manifest) == 12 and set(manifest["label"]) == {"normal", "ssc"}
    index = pd.read_parquet(project / "data/05_model_input/patch_index.parquet")
    assert set(index["mask_source"]) == {"pseudo"}  # no masks: the UNet learns pseudo-masks
    report = (project / "data/08_reporting/report.md").read_text()
    assert "three_class / CNN skipped" in report and "| binary | CNN |" in report
    assert (project / "data/06_models/binary.cnn.keras").exists()
    assert not (project / "data/06_models/three_class.cnn.keras").exists()
    logs = result.stdout + result.stderr
    assert "three_class.cnn skipped" in logs
    for patient in ("NORMAL000", "SSC001"):
        assert patient not in logs and patient not in report
        assert patient not in quarantine.to_csv()
