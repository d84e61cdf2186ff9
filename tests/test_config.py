"""The configuration environments merge key by key over conf/base."""

from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader

from ssc_skin.settings import CONFIG_LOADER_ARGS

CONF = Path(__file__).resolve().parents[1] / "conf"


def _params(env: str) -> dict:
    loader = OmegaConfigLoader(str(CONF), env=env, **CONFIG_LOADER_ARGS)
    return loader["parameters"]


@pytest.mark.parametrize("env", ["test", "paper"])
def test_environment_overrides_single_keys_and_keeps_the_rest(env):
    base, params = _params("base"), _params(env)
    # overridden
    assert params["cohort"]["synthetic"]["image_size"] != base["cohort"]["synthetic"]["image_size"]
    # untouched siblings survive the override (soft merge)
    assert params["cohort"]["synthetic"]["stain"] == base["cohort"]["synthetic"]["stain"]
    assert params["classification"]["tasks"] == base["classification"]["tasks"]


def test_paper_environment_is_paper_scale():
    params = _params("paper")
    mobilenet = params["classification"]["architectures"]["mobilenetv2"]
    assert mobilenet["input_size"] == 224 and mobilenet["options"]["alpha"] == 1.0
    assert mobilenet["options"]["weights"] == "imagenet"
