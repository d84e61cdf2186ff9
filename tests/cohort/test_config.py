"""One validation pass over the parameters before any work: every bad key named at once."""

import copy
from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader

from ssc_skin.cohort.config import parameter_problems, validate_parameters
from ssc_skin.cohort.ingest import CohortConfigError

PROJECT = Path(__file__).resolve().parents[2]


def _parameters(env: str) -> dict:
    loader = OmegaConfigLoader(
        str(PROJECT / "conf"),
        base_env="base",
        default_run_env=env,
        merge_strategy={"parameters": "soft"},
    )
    return loader["parameters"]


@pytest.mark.parametrize("env", ["base", "test", "paper"])
def test_the_shipped_configurations_are_valid(env):
    assert parameter_problems(_parameters(env)) == []


def _with(params: dict, dotted: str, value) -> dict:
    """A deep copy of params with one dotted key set."""
    params = copy.deepcopy(params)
    *path, last = dotted.split(".")
    node = params
    for name in path:
        node = node.setdefault(name, {})
    node[last] = value
    return params


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "cohort.checks.min_tissue_fraction",
            1.5,
            "cohort.checks.min_tissue_fraction must be a number from 0 to 1; got 1.5",
        ),
        ("cohort.checks.allowed_labels", [], "cohort.checks.allowed_labels must be a non-empty"),
        (
            "cohort.split.val_fraction",
            0.8,
            "cohort.split.val_fraction + cohort.split.test_fraction must be below 1",
        ),
        (
            "cohort.split.test_fraction",
            0,
            "cohort.split.test_fraction must be a number between 0 and 1",
        ),
        (
            "cohort.split.folds",
            1,
            "cohort.split.folds must be 0 (a single split) or an integer >= 2",
        ),
        ("cohort.split.seed", "abc", "cohort.split.seed must be an integer"),
        ("cohort.masks", "drawn", "cohort.masks must be one of auto, cohort, pseudo; got 'drawn'"),
        ("cohort.source.layout", "folders", "cohort.source.layout must be one of"),
        ("cohort.synthetic.stain", "pas", "cohort.synthetic.stain must be one of he, masson"),
        (
            "cohort.synthetic.patients_per_class",
            {"normal": 3, "mild": 2},
            "cohort.synthetic.patients_per_class has unknown label(s) mild",
        ),
        (
            "cohort.synthetic.difficulty",
            2,
            "cohort.synthetic.difficulty must be a number from 0 to 1",
        ),
        (
            "cohort.synthetic.artefact_rate",
            {"smudge": 0.1},
            "cohort.synthetic.artefact_rate has unknown artefact(s) smudge",
        ),
        (
            "cohort.target_microns_per_pixel",
            -1,
            "cohort.target_microns_per_pixel must be a positive number",
        ),
        (
            "cohort.source.label_map",
            {"SSc": "sclero"},
            "cohort.source.label_map maps 'SSc' to 'sclero'",
        ),
        ("patches.patch_size", 0, "patches.patch_size must be an integer >= 8"),
        ("patches.min_saturation", 300, "patches.min_saturation must be an integer from 0 to 255"),
        ("predict.patient_ids", "yes", "predict.patient_ids must be true or false"),
        ("predict.patient_id_regex", "(P", "predict.patient_id_regex does not compile"),
    ],
)
def test_each_bad_key_is_named(key, value, message):
    problems = parameter_problems(_with(_parameters("base"), key, value))
    assert any(message in problem for problem in problems), problems


def test_all_problems_come_in_one_message():
    params = _with(_parameters("base"), "cohort.checks.min_tissue_fraction", 1.5)
    params = _with(params, "cohort.split.val_fraction", 2)
    params = _with(params, "cohort.source.layout", "folders")
    with pytest.raises(CohortConfigError) as caught:
        validate_parameters(params)
    message = str(caught.value)
    for key in (
        "cohort.checks.min_tissue_fraction",
        "cohort.split.val_fraction",
        "cohort.source.layout",
    ):
        assert key in message
    assert message.count("\n  - ") == 3


def test_paths_are_checked_only_when_asked(tmp_path):
    params = _with(
        _parameters("base"),
        "cohort.source",
        {"layout": "folder", "root": str(tmp_path / "nowhere")},
    )
    assert parameter_problems(params) == []
    problems = parameter_problems(params, check_paths=True)
    assert problems == ["cohort.source.root is not a folder (nowhere)"]
    (tmp_path / "nowhere").mkdir()
    assert parameter_problems(params, check_paths=True) == []
