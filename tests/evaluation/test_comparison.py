import numpy as np

from ssc_skin.evaluation import comparison

from .conftest import BINARY, PARAMS, make_cohort


def _worse(predictions, flip_patients):
    """The same predictions with some test patients' calls reversed."""
    worse = predictions.copy()
    at = worse["patient"].isin(flip_patients)
    worse.loc[at, ["p_normal", "p_ssc"]] = worse.loc[at, ["p_ssc", "p_normal"]].to_numpy()
    return worse


def test_identical_models_show_no_difference():
    predictions, _ = make_cohort()
    result = comparison.compare(
        "mobilenetv2", predictions, "cnn", predictions, BINARY["classes"], PARAMS
    )
    assert result["p_value"] == 1.0 and result["auc_difference"] == 0
    assert result["conclusion"] == "no evidence of a difference"
    assert result["sentence"].startswith("MobileNetV2 vs CNN (4 test patients both assessed)")
    assert "McNemar exact p = 1" in result["sentence"]


def test_a_clearly_better_model_on_many_patients_is_named():
    predictions, _ = make_cohort(patients_per_split=40, images=1, patches=2)
    flipped = [f"pt-test{k}" for k in range(0, 40, 3)]  # 14 of 40 patients wrong
    result = comparison.compare(
        "mobilenetv2",
        predictions,
        "texture",
        _worse(predictions, flipped),
        BINARY["classes"],
        PARAMS,
    )
    assert result["only_a_right"] == 14 and result["only_b_right"] == 0
    assert result["p_value"] < 0.001 and result["auc_difference_ci_low"] > 0
    assert (
        result["conclusion"] == "evidence that MobileNetV2 is better "
        "(both AUC and right/wrong calls)"
    )
    assert "colour+texture LR alone for 0" in result["sentence"]


def test_only_patients_both_models_assessed_are_compared():
    predictions, _ = make_cohort()
    fewer = predictions[predictions["patient"] != "pt-test0"]
    result = comparison.compare("cnn", predictions, "texture", fewer, BINARY["classes"], PARAMS)
    assert result["patients"] == 3 and result["patients_one_model_only"] == 1


def test_every_pair_within_a_task_in_the_given_order():
    predictions, _ = make_cohort()
    classes = BINARY["classes"]
    models = {
        "binary.mobilenetv2": ("binary", predictions, classes),
        "binary.cnn": ("binary", predictions, classes),
        "binary.texture": ("binary", predictions, classes),
        "three_class.cnn": ("three_class", predictions, classes),
    }
    results = comparison.compare_all(models, PARAMS)
    assert list(results) == [
        "binary.mobilenetv2_vs_cnn",
        "binary.mobilenetv2_vs_texture",
        "binary.cnn_vs_texture",
    ]
    assert {r["task"] for r in results.values()} == {"binary"}


def test_sentence_reads_like_the_issue_asks():
    result = {
        "a": "mobilenetv2",
        "b": "cnn",
        "patients": 9,
        "auc_difference": 0.04,
        "auc_difference_ci_low": -0.05,
        "auc_difference_ci_high": 0.12,
        "p_value": 0.625,
        "only_a_right": 2,
        "only_b_right": 1,
    }
    result["conclusion"] = comparison.conclusion(result)
    text = comparison.sentence(result)
    assert text == (
        "MobileNetV2 vs CNN (9 test patients both assessed): AUC difference +0.04 "
        "[\u22120.05, +0.12] (95% paired bootstrap over patients), McNemar exact "
        "p = 0.62 (MobileNetV2 alone right for 2, CNN alone for 1) \u2014 no "
        "evidence of a difference."
    )
    assert np.isfinite(result["auc_difference"])


def test_a_handful_of_patients_gets_no_interval_and_no_claim():
    predictions, _ = make_cohort(patients_per_split=2)  # 1 normal, 1 ssc test patient
    flipped = _worse(predictions, ["pt-test1"])
    result = comparison.compare("cnn", predictions, "texture", flipped, BINARY["classes"], PARAMS)
    assert np.isnan(result["auc_difference_ci_low"])
    assert result["conclusion"] == "no evidence of a difference"
    assert "no interval: too few patients of some class" in result["sentence"]
