"""Everyday `kedro` commands print no warnings about code the project does not control, and the
one notice settings.py drops (MLflow's "Add type hints" for kedro-mlflow's KedroPipelineModel)
is dropped only there: other warnings, and the notice for any other model class, still show."""

import subprocess
import sys

from tests.helpers import PROJECT, kedro

TYPE_HINT_NOTICE = "Add type hints to the `predict` method"
DOTTED_NAMES = "dataset names contain '.'"


def test_registry_list_prints_neither_the_type_hint_notice_nor_the_dotted_names_warning():
    # `registry list` loads the plugins' commands (kedro-mlflow defines its pyfunc model then)
    # and builds every pipeline (Kedro checks the dataset names then).
    result = kedro(PROJECT, "registry", "list", timeout=300, COLUMNS="200")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "- __default__" in result.stdout
    output = result.stdout + result.stderr
    assert TYPE_HINT_NOTICE not in output
    assert DOTTED_NAMES not in output


def test_only_kedro_mlflow_s_notice_is_dropped():
    script = f"""
import sys, warnings
sys.path.insert(0, {str(PROJECT / "src")!r})
warnings.simplefilter("default")
import ssc_skin.settings  # defines kedro-mlflow's KedroPipelineModel
from mlflow.pyfunc import PythonModel

warnings.warn("an unrelated warning", UserWarning)

class NoHints(PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # the unrelated warning shows, then the notice once: for NoHints, defined after it
    # (MLflow shows the notice once a process: had KedroPipelineModel's shown, NoHints' would not)
    stderr = result.stderr
    assert "an unrelated warning" in stderr
    assert stderr.count(TYPE_HINT_NOTICE) == 1
    assert stderr.index("an unrelated warning") < stderr.index(TYPE_HINT_NOTICE)
