"""Project settings. There is no need to edit this file unless you want to change values
from the Kedro defaults. For further information, including these default values, see
https://docs.kedro.org/en/stable/kedro_project_setup/settings.html."""

import warnings

from kedro.config import OmegaConfigLoader

from ssc_skin.hooks import InputSafetyHook, NodeTimingHook
from ssc_skin.model_grid import ModelGridHook


def _import_kedro_mlflow_quietly() -> None:
    """Define kedro-mlflow's KedroPipelineModel without MLflow's "Add type hints to the
    `predict` method" notice, which it prints when that class (a pyfunc model this project
    never logs) is defined: on every `kedro` command, when Kedro loads the plugin's commands.
    Kedro imports this module (bootstrap_project) before any plugin command or hook.

    A warnings filter cannot do it (MLflow puts a "once" filter in front of any other for that
    check), so only that notice is dropped where it would be shown: every other warning of the
    import still shows, and the once-registry forgets the notice so that a later model class
    without type hints still gets it."""
    notice = "Add type hints to the `predict` method"
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if not (issubclass(category, UserWarning) and notice in str(message)):
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        import kedro_mlflow.mlflow  # noqa: F401, PLC0415
    for key in [key for key in warnings.onceregistry if notice in str(key[0])]:
        del warnings.onceregistry[key]


_import_kedro_mlflow_quietly()

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
