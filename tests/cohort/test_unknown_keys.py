"""Issue 22, item 1: a misspelt key anywhere in the parameter blocks stops the run with one
message naming every unknown key by its dotted path, with a did-you-mean."""

from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader

from ssc_skin.cohort.config import parameter_problems, validate_parameters
from ssc_skin.cohort.ingest import CohortConfigError

CONF = Path(__file__).resolve().parents[2] / "conf"
ENVS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "base")


def test_typos_at_every_level_are_named_in_one_message():
    params = {
        "cohort": {"sorce": {"layout": "synthetic"}, "checks": {"min_tisue_fraction": 0.9}},
        "patches": {"patchsize": 4096},
        "predict": {"patient_id_regx": None},
        "classification": {"architectures": {"cnn": {"optons": {}, "training": {"epoch": 1}}}},
        "evaluation": {"texture": {"colour_bin": 8}},
        "engine": {"n_worker": 4},
    }
    with pytest.raises(CohortConfigError) as error:
        validate_parameters(params)
    message = str(error.value)
    for path, suggestion in [
        ("cohort.sorce", "source"),
        ("cohort.checks.min_tisue_fraction", "min_tissue_fraction"),
        ("patches.patchsize", "patch_size"),
        ("predict.patient_id_regx", "patient_id_regex"),
        ("classification.architectures.cnn.optons", "options"),
        ("classification.architectures.cnn.training.epoch", "epochs"),
        ("evaluation.texture.colour_bin", "colour_bins"),
        ("engine.n_worker", "n_workers"),
    ]:
        assert f"{path} is not a known key; did you mean {suggestion!r}?" in message
    assert message.startswith("8 configuration problem(s)")


def test_a_misspelt_block_name_is_reported():
    assert parameter_problems({"cohrt": {}}) == ["cohrt is not a known key; did you mean 'cohort'?"]


def test_free_form_maps_keep_the_users_keys():
    params = {
        "cohort": {"source": {"label_map": {"MRN-4471-Smith": "ssc", "Müller": "normal"}}},
        "classification": {
            "tasks": {
                "PAT_0042": {
                    "name": "PAT_0042",
                    "classes": ["normal", "ssc"],
                    "label_map": {"(Jane Doe)": "ssc"},
                }
            },
            "architectures": {"mynet": {"name": "mynet", "options": {"anything": 1}}},
        },
        "registry": {"model_names": {"PAT_0042": "x"}},
    }
    assert [p for p in parameter_problems(params) if "not a known key" in p] == []


@pytest.mark.parametrize("env", ["base", *ENVS])
def test_every_conf_environment_validates(env):
    loader = OmegaConfigLoader(
        conf_source=str(CONF),
        base_env="base",
        default_run_env=env if env != "base" else "local",
    )
    params = loader["parameters"]
    assert params["cohort"]
    assert parameter_problems(params) == []
