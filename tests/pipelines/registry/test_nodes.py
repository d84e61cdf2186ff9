"""The `registry` pipeline: per task the best model on validation patients, registered, aliased."""

import math

import mlflow
import mlflow.pyfunc
import pytest
from mlflow import MlflowClient

from ssc_skin import tracking
from ssc_skin.pipelines.registry.nodes import (
    choose_model,
    pick_champions,
    rank_key,
    register_champions,
)
from tests.helpers import sqlite_tracking

RANK = ["val_patient_balanced_accuracy", "val_patient_auc"]
PARAMS = {
    "model_names": {"binary": "ssc-skin-binary", "three_class": "ssc-skin-three-class"},
    "alias": "champion",
    "rank_by": RANK,
    "promote": "if_better",
}


def _evaluation(task, arch, bal, auc=0.5, **extra):
    return {
        "task": task,
        "architecture": arch,
        "val_patient_balanced_accuracy": bal,
        "val_patient_auc": auc,
        "input_size": 64,
        **extra,
    }


def test_the_champion_ranks_highest_on_the_first_metric_then_the_next():
    champions = pick_champions(
        [
            _evaluation("binary", "mobilenetv2", 0.8, 0.7),
            _evaluation("binary", "cnn", 0.8, 0.9),
            _evaluation("three_class", "mobilenetv2", 0.6),
            _evaluation("three_class", "cnn", 0.4),
        ],
        RANK,
    )
    assert champions["binary"]["architecture"] == "cnn"  # tie on balanced accuracy, AUC decides
    assert champions["three_class"]["architecture"] == "mobilenetv2"


def test_missing_or_nan_metrics_rank_lowest_and_skipped_models_are_no_candidates():
    nan = _evaluation("binary", "mobilenetv2", math.nan)
    assert rank_key(nan, RANK)[0] == -math.inf
    champions = pick_champions(
        [
            nan,
            _evaluation("binary", "cnn", 0.1),
            {"task": "three_class", "architecture": "cnn", "skipped": "binary-only cohort"},
        ],
        RANK,
    )
    assert set(champions) == {"binary"} and champions["binary"]["architecture"] == "cnn"


def test_the_champions_own_whole_image_predictor_comes_first():
    tags = {
        "binary.cnn.whole_image_predictor_uri": "models:/m-cnn",
        "binary.mobilenetv2.whole_image_predictor_uri": "models:/m-mnv2",
    }
    uri, what, _ = choose_model(_evaluation("binary", "cnn", 1.0, model_uri="models:/m-k"), tags)
    assert (uri, what) == ("models:/m-cnn", "binary.cnn whole-image predictor")


def test_without_its_own_predictor_the_mobilenetv2_one_is_registered_and_the_reason_said():
    tags = {"binary.mobilenetv2.whole_image_predictor_uri": "models:/m-mnv2"}
    uri, what, why = choose_model(_evaluation("binary", "cnn", 1.0, model_uri="models:/m-k"), tags)
    assert uri == "models:/m-mnv2" and what == "binary.mobilenetv2 whole-image predictor"
    assert "binary.cnn has no whole-image predictor" in why


def test_without_any_predictor_the_keras_model_is_registered_and_called_a_patch_classifier():
    uri, what, why = choose_model(_evaluation("binary", "cnn", 1.0, model_uri="models:/m-k"), {})
    assert uri == "models:/m-k" and "patch classifier" in what and "64 px patches" in why
    assert choose_model(_evaluation("binary", "cnn", 1.0), {})[0] == ""


class _Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def _logged_model(name):
    return mlflow.pyfunc.log_model(name=name, python_model=_Echo(), pip_requirements=[]).model_uri


@pytest.fixture
def store(tmp_path):
    with sqlite_tracking(tmp_path) as uri:
        yield uri


def _none(evaluations):
    """No predictor reported by the export stage: the registry falls back to run tags."""
    return [{} for _ in evaluations]


def _a_training_run(scores):
    """A parent run with nested model runs and export tags, as `kedro run` leaves them."""
    evaluations = []
    with mlflow.start_run(run_name="__default__"):
        for (task, arch), score in scores.items():
            with mlflow.start_run(run_name=f"{task}.{arch}", nested=True) as child:
                keras_uri = _logged_model(f"{task}_{arch}")
            evaluations.append(
                _evaluation(
                    task,
                    arch,
                    score,
                    mlflow_run_id=child.info.run_id,
                    model_uri=keras_uri,
                    test_patient_accuracy=score,
                )
            )
        for task in ("binary", "three_class"):
            mlflow.set_tag(
                f"{task}.mobilenetv2.whole_image_predictor_uri",
                _logged_model(f"{task}_mobilenetv2_whole_image_predictor"),
            )
    return evaluations


def test_both_tasks_are_registered_with_the_champion_alias_and_the_run_says_so(store):
    evaluations = _a_training_run(
        {
            ("binary", "mobilenetv2"): 0.9,
            ("binary", "cnn"): 0.7,
            ("three_class", "mobilenetv2"): 0.5,
            ("three_class", "cnn"): 0.6,
        }
    )
    with mlflow.start_run(run_name="registry") as run:
        registered = register_champions(PARAMS, *evaluations, *_none(evaluations))
    client = MlflowClient()
    for task, name in PARAMS["model_names"].items():
        version = client.get_model_version_by_alias(name, "champion")
        assert str(version.version) == registered[task]["version"] == "1"
        assert version.tags["task"] == task
    binary = client.get_model_version_by_alias("ssc-skin-binary", "champion")
    assert binary.tags["champion"] == "binary.mobilenetv2"
    assert binary.tags["registered"] == "binary.mobilenetv2 whole-image predictor"
    assert float(binary.tags["val_patient_balanced_accuracy"]) == pytest.approx(0.9)
    three = client.get_model_version_by_alias("ssc-skin-three-class", "champion")
    assert three.tags["champion"] == "three_class.cnn"  # no predictor of its own (yet):
    assert three.tags["registered"] == "three_class.mobilenetv2 whole-image predictor"
    assert "three_class.cnn has no whole-image predictor" in three.tags["reason"]
    assert mlflow.pyfunc.load_model("models:/ssc-skin-binary@champion") is not None
    note = client.get_run(run.info.run_id).data.tags[tracking.NOTE_TAG]
    assert "binary.mobilenetv2 (champion)" in note and "three_class.cnn (champion)" in note
    assert "ssc-skin-binary v1" in note


def test_a_worse_run_does_not_take_the_alias_unless_told_to(store):
    better = _a_training_run({("binary", "mobilenetv2"): 0.9})
    with mlflow.start_run():
        register_champions(PARAMS, *better, *_none(better))
    worse = _a_training_run({("binary", "mobilenetv2"): 0.5})
    with mlflow.start_run():
        registered = register_champions(PARAMS, *worse, *_none(worse))
    assert registered["binary"]["version"] == "2" and registered["binary"]["alias_version"] == "1"
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("ssc-skin-binary", "champion").version) == "1"
    with mlflow.start_run():
        register_champions({**PARAMS, "promote": "always"}, *worse, *_none(worse))
    assert str(client.get_model_version_by_alias("ssc-skin-binary", "champion").version) == "3"


def test_an_unknown_promotion_policy_names_the_key(store):
    evaluations = _a_training_run({("binary", "cnn"): 0.5})
    with mlflow.start_run(), pytest.raises(ValueError, match="registry.promote must be one of"):
        register_champions({**PARAMS, "promote": "sometimes"}, *evaluations, *_none(evaluations))


def test_without_an_active_run_nothing_is_registered(store):
    assert register_champions(PARAMS, _evaluation("binary", "cnn", 1.0), {}) == {}
    assert MlflowClient().search_registered_models() == []


def test_the_predictor_the_export_stage_reports_is_registered_for_its_champion(store):
    """Export logs a whole-image predictor for every model: a CNN champion gets its own."""
    evaluations = _a_training_run(
        {("three_class", "mobilenetv2"): 0.5, ("three_class", "cnn"): 0.6}
    )
    with mlflow.start_run():
        own = _logged_model("three_class_cnn_whole_image_predictor")
        predictors = [{"uri": None, "reason": "x"}, {"uri": own}]
        registered = register_champions(PARAMS, *evaluations, *predictors)
    assert registered["three_class"]["uri"] == own
    assert registered["three_class"]["registered"] == "three_class.cnn whole-image predictor"


def test_a_version_links_to_the_nested_run_that_trained_it_and_is_described(store):
    """Export logs the predictor into the model's nested run: the version links there, not to
    the parent; the model and the version say what they are; the parent shows headlines."""
    with mlflow.start_run(run_name="study") as parent:
        with mlflow.start_run(run_name="binary.cnn", nested=True) as child:
            pass
        with tracking.within(child.info.run_id):  # as log_whole_image_predictor does
            uri = _logged_model("binary_cnn_whole_image_predictor")
        evaluation = _evaluation(
            "binary",
            "cnn",
            0.8,
            classes=["normal", "ssc"],
            mlflow_run_id=child.info.run_id,
            test_patient_accuracy=0.75,
            test_patient_auc=0.9,
            test_patients=8,
        )
        # a pooled cross-validation evaluation has no run of its own: the export says where
        registered = register_champions(
            PARAMS, {**evaluation, "mlflow_run_id": None}, {"uri": uri, "run_id": child.info.run_id}
        )
    client = MlflowClient()
    version = client.get_model_version("ssc-skin-binary", registered["binary"]["version"])
    assert version.run_id == child.info.run_id != parent.info.run_id
    assert version.tags["nested_run_id"] == child.info.run_id
    assert "binary.cnn" in version.description and "0.750" in version.description
    assert "whole-image predictor" in version.description
    model = client.get_registered_model("ssc-skin-binary")
    assert "base64" in model.description and "normal, ssc" in model.description
    assert "models:/ssc-skin-binary@champion" in model.description
    assert model.tags["task"] == "binary" and model.tags["project"] == "ssc-skin"
    metrics = client.get_run(parent.info.run_id).data.metrics
    assert metrics == {
        "binary.cnn/test_patient_accuracy": 0.75,
        "binary.cnn/test_patient_auc": 0.9,
        "binary.cnn/val_patient_balanced_accuracy": 0.8,
    }  # headline numbers only, grouped per model; counts and sizes are not charts
