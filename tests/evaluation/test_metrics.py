import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ssc_skin.evaluation import metrics


def test_perfect_predictions_score_perfectly():
    y = np.array([0, 1, 2, 1])
    p = np.eye(3)[y]
    result = metrics.classification_metrics(y, p)
    assert result["accuracy"] == 1 and result["balanced_accuracy"] == 1
    assert result["auc"] == 1 and result["brier"] == 0 and result["kappa_quadratic"] == 1


def test_binary_metrics_on_a_known_case():
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.6, 0.4, 0.9])
    result = metrics.classification_metrics(y, np.stack([1 - p1, p1], 1))
    assert result["accuracy"] == 0.5
    assert result["auc"] == pytest.approx(0.75)
    assert "kappa_quadratic" not in result


def test_auc_is_nan_when_a_class_is_missing():
    result = metrics.classification_metrics(np.array([1, 1]), np.array([[0.2, 0.8], [0.6, 0.4]]))
    assert np.isnan(result["auc"])


def test_bootstrap_interval_brackets_the_estimate():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    p1 = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.25, 60), 0, 1)
    p = np.stack([1 - p1, p1], 1)
    acc = metrics.classification_metrics(y, p)["accuracy"]
    low, high = metrics.bootstrap_interval(
        y, p, lambda t, q: metrics.classification_metrics(t, q)["accuracy"], 300, seed=1
    )
    assert 0 <= low <= acc <= high <= 1
    assert high - low > 0.01


def test_dice_and_iou():
    truth = np.array([[1, 1, 0, 0]])
    pred = np.array([[1, 0, 0, 0]])
    dice, iou = metrics.dice_iou(truth, pred, positive=1)
    assert dice == pytest.approx(2 / 3) and iou == pytest.approx(0.5)


def test_wilson_interval_is_not_degenerate_at_perfect_accuracy():
    low, high = metrics.wilson_interval(9, 9)
    assert high == pytest.approx(1.0) and 0.6 < low < 0.75  # 9/9 is not proof of 100%
    low, high = metrics.wilson_interval(5, 10)
    assert low < 0.5 < high


def test_confusion_keeps_absent_classes_as_plain_ints():
    result = metrics.confusion(np.array([0, 1, 1]), np.array([0, 1, 0]), n_classes=3)
    assert result == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert all(type(v) is int for row in result for v in row)


def test_sensitivity_and_specificity_one_vs_rest():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    result = metrics.per_class_sensitivity_specificity(y_true, y_pred, ["normal", "early", "late"])
    assert result["sensitivity_normal"] == 2 / 3 and result["specificity_normal"] == 1.0
    assert result["sensitivity_early"] == 0.5 and result["specificity_early"] == 3 / 4
    assert result["sensitivity_late"] == 1.0 and result["specificity_late"] == 4 / 5
    assert list(result) == [
        "sensitivity_normal",
        "specificity_normal",
        "sensitivity_early",
        "specificity_early",
        "sensitivity_late",
        "specificity_late",
    ]


def test_undefined_rates_are_nan():
    result = metrics.per_class_sensitivity_specificity(
        np.array([0, 0]), np.array([0, 1]), ["normal", "ssc"]
    )
    assert result["sensitivity_normal"] == 0.5
    assert math.isnan(result["sensitivity_ssc"])  # no ssc example
    assert math.isnan(result["specificity_normal"])  # no non-normal example
    assert result["specificity_ssc"] == 0.5


def test_mcnemar_counts_only_discordant_patients_and_is_exact():
    a = np.array([True] * 10 + [True] * 6 + [False] * 1 + [False] * 3)
    b = np.array([True] * 10 + [False] * 6 + [True] * 1 + [False] * 3)
    result = metrics.mcnemar_exact(a, b)
    assert result["only_a_right"] == 6 and result["only_b_right"] == 1
    # two-sided exact binomial: P(X <= 1 or X >= 6 | n=7, 1/2) = 16/128
    assert result["p_value"] == pytest.approx(16 / 128)


def test_mcnemar_without_discordant_pairs_gives_p_one():
    same = np.array([True, False, True])
    assert metrics.mcnemar_exact(same, same)["p_value"] == 1.0


def test_paired_bootstrap_difference_brackets_a_real_gap_and_zero_for_equal_models():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    good = np.clip(0.2 + 0.6 * y + rng.normal(0, 0.15, 80), 0, 1)
    poor = np.clip(0.45 + 0.1 * y + rng.normal(0, 0.25, 80), 0, 1)
    pa, pb = np.stack([1 - good, good], 1), np.stack([1 - poor, poor], 1)
    diff, low, high = metrics.paired_bootstrap_difference(
        y, pa, pb, metrics.METRICS["auc"], 300, seed=1
    )
    assert 0 < low <= diff <= high
    diff, low, high = metrics.paired_bootstrap_difference(y, pa, pa, metrics.METRICS["auc"], 50)
    assert diff == low == high == 0


def test_expected_calibration_error_of_calibrated_and_overconfident_models():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 20000)
    right = rng.uniform(0, 1, 20000) < confidence  # right as often as it claims
    y = np.where(right, 1, 0)
    p = np.stack([1 - confidence, confidence], 1)
    assert metrics.expected_calibration_error(y, p) < 0.02
    always_sure = np.tile([0.0, 1.0], (100, 1))
    half_right = np.array([0, 1] * 50)
    assert metrics.expected_calibration_error(half_right, always_sure) == pytest.approx(0.5)


def test_reliability_table_bins_by_top_probability():
    p = np.array([[0.95, 0.05], [0.08, 0.92], [0.45, 0.55], [0.4, 0.6]])
    table = metrics.reliability_table(np.array([0, 0, 1, 0]), p, bins=10)
    assert table.loc[9, "count"] == 2 and table.loc[9, "accuracy"] == 0.5
    assert table.loc[5, "count"] == 2 and table["count"].sum() == 4


def test_youden_threshold_separates_validation_patients_and_prefers_05_on_ties():
    positive = np.array([False, False, False, True, True, True])
    score = np.array([0.1, 0.2, 0.3, 0.35, 0.6, 0.9])
    threshold = metrics.youden_threshold(positive, score)
    assert 0.3 < threshold <= 0.35  # 0.5 would miss the 0.35 patient
    stats = metrics.screening_at_threshold(positive, score, threshold)
    assert stats == {"accuracy": 1.0, "sensitivity": 1.0, "specificity": 1.0}
    separable = metrics.youden_threshold(np.array([False, True]), np.array([0.2, 0.8]))
    assert separable == 0.5  # every threshold in (0.2, 0.8] is perfect: keep 0.5
    assert math.isnan(metrics.youden_threshold(np.array([True, True]), np.array([0.2, 0.8])))


def test_bootstrap_needs_a_few_units_of_every_class():
    assert metrics.enough_for_bootstrap(np.array([0, 0, 0, 1, 1, 1]), 2)
    assert not metrics.enough_for_bootstrap(np.array([0, 0, 0, 1, 1]), 2)
    assert not metrics.enough_for_bootstrap(np.array([0, 0, 0, 0]), 2)  # a class absent


@pytest.mark.parametrize("n_classes", [2, 3])
def test_fast_auc_equals_sklearn_with_ties(n_classes):
    rng = np.random.default_rng(n_classes)
    y = np.tile(np.arange(n_classes), 20)
    p = np.round(rng.dirichlet(np.ones(n_classes), len(y)) + 0.3 * np.eye(n_classes)[y], 1)
    p = p / p.sum(1, keepdims=True)
    expected = (
        roc_auc_score(y, p[:, 1]) if n_classes == 2 else roc_auc_score(y, p, multi_class="ovr")
    )
    assert metrics.METRICS["auc"](y, p) == pytest.approx(expected, abs=1e-12)
