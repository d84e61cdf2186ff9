"""The models a run trains come from that run's Kedro configuration, not from a file in the
working directory."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.pipeline import Pipeline

from ssc_skin import model_grid
from ssc_skin.pipeline_registry import register_pipelines
from ssc_skin.settings import CONFIG_LOADER_ARGS

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _restore_active_grid():
    saved = model_grid._ACTIVE["grid"]
    yield
    model_grid._ACTIVE["grid"] = saved


def _conf_with_local_architecture(tmp_path: Path) -> Path:
    """The project's conf/ plus an environment `lab` declaring an architecture base lacks."""
    conf = tmp_path / "conf"
    shutil.copytree(PROJECT / "conf" / "base", conf / "base")
    (conf / "lab").mkdir()
    extra = {
        "classification": {
            "architectures": {
                "wide_cnn": {
                    "name": "wide_cnn",
                    "builder": "cnn",
                    "input_size": 64,
                    "options": {"filters": [16, 32]},
                }
            }
        }
    }
    (conf / "lab" / "parameters.yml").write_text(yaml.safe_dump(extra))
    return conf


def test_an_architecture_declared_only_in_an_environment_gets_its_namespaces(tmp_path):
    conf = _conf_with_local_architecture(tmp_path)
    loader = OmegaConfigLoader(conf_source=str(conf), env="lab", **CONFIG_LOADER_ARGS)
    model_grid.ModelGridHook().after_context_created(SimpleNamespace(config_loader=loader))
    pipelines = register_pipelines()
    trained = {n.name for n in pipelines["classification"].nodes}
    assert {"binary.wide_cnn.train_classifier", "three_class.wide_cnn.train_classifier"} <= trained
    evaluated = {n.name for n in pipelines["evaluation"].nodes}
    assert "binary.wide_cnn.predict_patches" in evaluated
    registry_inputs = pipelines["registry"].inputs()
    assert "binary.wide_cnn.evaluation" in registry_inputs


def test_pipelines_do_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    model_grid._ACTIVE["grid"] = None
    monkeypatch.chdir(tmp_path)  # no conf/ here
    names = {n.name for n in register_pipelines()["classification"].nodes}
    assert "binary.cnn.train_classifier" in names


def test_a_configured_model_the_pipeline_does_not_wire_stops_the_run():
    grid = model_grid.ModelGrid(("binary",), ("cnn", "mobilenetv2"))
    model_grid._ACTIVE["grid"] = grid
    from ssc_skin.pipelines import classification  # noqa: PLC0415

    only_cnn = classification.create_pipeline(model_grid.ModelGrid(("binary",), ("cnn",)))
    with pytest.raises(model_grid.ModelGridError, match="binary.mobilenetv2"):
        model_grid.ModelGridHook().before_pipeline_run({}, only_cnn)
    model_grid.ModelGridHook().before_pipeline_run({}, classification.create_pipeline(grid))
    model_grid.ModelGridHook().before_pipeline_run({}, Pipeline([]))  # trains nothing: fine


def test_a_run_filtered_on_purpose_is_checked_against_the_registered_pipeline(monkeypatch):
    """`kedro run --to-outputs cv.binary.cnn.evaluation` leaves the other models out by
    design (benchmarks/pretraining.py does that); the pipeline it was cut from is checked."""
    from kedro.framework import project  # noqa: PLC0415

    from ssc_skin.pipelines import classification  # noqa: PLC0415

    grid = model_grid.ModelGrid(("binary",), ("cnn", "mobilenetv2"))
    model_grid._ACTIVE["grid"] = grid
    only_cnn = classification.create_pipeline(model_grid.ModelGrid(("binary",), ("cnn",)))
    filtered = {"to_outputs": ["binary.cnn.evaluation"], "pipeline_names": ["classification"]}
    monkeypatch.setattr(
        project, "pipelines", {"classification": classification.create_pipeline(grid)}
    )
    model_grid.ModelGridHook().before_pipeline_run(filtered, only_cnn)
    monkeypatch.setattr(project, "pipelines", {"classification": only_cnn})
    with pytest.raises(model_grid.ModelGridError, match="binary.mobilenetv2"):
        model_grid.ModelGridHook().before_pipeline_run(filtered, only_cnn)


def test_bad_model_blocks_are_named():
    with pytest.raises(model_grid.ModelGridError, match="classification.architectures"):
        model_grid.ModelGrid.from_parameters({"classification": {"tasks": {"binary": {}}}})
    with pytest.raises(model_grid.ModelGridError, match=r"classification.tasks.bad\.name"):
        model_grid.ModelGrid.from_parameters(
            {"classification": {"tasks": {"bad.name": {}}, "architectures": {"cnn": {}}}}
        )


def test_an_entry_named_unlike_its_key_is_refused_with_the_builder_hint():
    """`cnn32: {name: cnn}` once ran, but its runs, reports and registered models were named
    `binary.cnn` like the real CNN's, and each overwrote the other's."""
    blocks = {"tasks": {"binary": {"name": "binary"}}}
    variant = {"cnn": {"name": "cnn"}, "cnn32": {"name": "cnn", "input_size": 32}}
    with pytest.raises(model_grid.ModelGridError) as caught:
        model_grid.ModelGrid.from_parameters(
            {"classification": {**blocks, "architectures": variant}}
        )
    assert "classification.architectures.cnn32.name is 'cnn'" in str(caught.value)
    assert "builder: cnn" in str(caught.value)
    variant["cnn32"] = {"name": "cnn32", "builder": "cnn", "input_size": 32}
    grid = model_grid.ModelGrid.from_parameters(
        {"classification": {**blocks, "architectures": variant}}
    )
    assert grid.architectures == ("cnn", "cnn32")
