"""Project settings. There is no need to edit this file unless you want to change values
from the Kedro defaults. For further information, including these default values, see
https://docs.kedro.org/en/stable/kedro_project_setup/settings.html."""

from kedro.config import OmegaConfigLoader

from ssc_skin.hooks import InputSafetyHook, NodeTimingHook
from ssc_skin.model_grid import ModelGridHook

# kedro-mlflow registers its own hooks through its plugin entry point. InputSafetyHook runs
# before them: it validates the configuration and keeps user paths out of MLflow params.
# ModelGridHook hands the run's configuration to the pipeline registry (model_grid.py).
HOOKS = (NodeTimingHook(), InputSafetyHook(), ModelGridHook())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment (conf/test, conf/paper) overrides single keys, not whole blocks.
    "merge_strategy": {"parameters": "soft"},
    "config_patterns": {
        "mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"],
    },
}
