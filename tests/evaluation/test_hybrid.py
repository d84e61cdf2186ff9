"""The hybrid: component models stacked on validation patients."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ssc_skin.constants import Skipped
from ssc_skin.evaluation import hybrid
from ssc_skin.pipelines.evaluation.hybrid_nodes import fit_hybrid

TASK = {"name": "binary", "classes": ["normal", "ssc"]}


def _probabilities(y: np.ndarray, accuracy: float, rng: np.random.Generator) -> np.ndarray:
    """Binary probabilities right with probability `accuracy`; like a useful model, more
    confident when right than when wrong."""
    right = rng.random(len(y)) < accuracy
    call = np.where(right, y, 1 - y)
    confidence = np.where(right, rng.uniform(0.6, 0.95, len(y)), rng.uniform(0.5, 0.7, len(y)))
    p_ssc = np.where(call == 1, confidence, 1 - confidence)
    return np.column_stack([1 - p_ssc, p_ssc])


def test_stacking_two_models_with_independent_errors_beats_each_of_them():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    a, b = _probabilities(y, 0.75, rng), _probabilities(y, 0.75, rng)
    patients = np.arange(4000) // 40
    val, test = slice(0, 2000), slice(2000, None)
    model, info = hybrid.fit([a[val], b[val]], y[val], patients[val], 2)
    stacked = hybrid.predict_proba(model, [a[test], b[test]], 2).argmax(axis=1)
    single = max((a[test].argmax(1) == y[test]).mean(), (b[test].argmax(1) == y[test]).mean())
    assert (stacked == y[test]).mean() > single + 0.02
    assert info["C"] in hybrid.DEFAULTS["C"] and info["components"] == 2


def test_the_stacker_leans_on_the_model_that_is_right_and_ignores_noise():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    good = _probabilities(y, 0.9, rng)
    p_noise = rng.uniform(0.05, 0.95, len(y))
    noise = np.column_stack([1 - p_noise, p_noise])  # knows nothing of y
    model, _ = hybrid.fit([good, noise], y, np.arange(2000) // 20, 2)
    weights = hybrid.component_weights(model, ["good", "noise"], TASK["classes"])
    assert weights["good"] > 0.8
    assert weights["noise"] < 0.2


def test_inputs_that_cannot_be_stacked_are_named():
    with pytest.raises(ValueError, match="at least one component"):
        hybrid.stack([])
    with pytest.raises(ValueError, match="number of patches"):
        hybrid.stack([np.ones((3, 2)), np.ones((4, 2))])
    with pytest.raises(ValueError, match="two classes"):
        hybrid.fit([np.full((5, 2), 0.5)], np.zeros(5, int), np.arange(5), 2)


def _frame(rows: np.ndarray, y: np.ndarray, p: np.ndarray, split: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row": rows,
            "image": [f"im-{r // 4}" for r in rows],
            "patient": [f"pt-{r // 8}" for r in rows],
            "label": np.where(y == 1, "late", "normal"),
            "split": split,
            "y_true": y,
            "p_normal": p[:, 0],
            "p_ssc": p[:, 1],
        }
    )


def _two_components(seed: int) -> tuple[np.ndarray, ...]:
    """400 patches of 50 patients (8 each; the first 20 patients are validation) and two
    components' probabilities, 80 % and 70 % right."""
    rng = np.random.default_rng(seed)
    rows = np.arange(400)
    y = (rows // 8) % 2
    split = np.where(rows < 160, "val", "test")
    return rows, y, split, _probabilities(y, 0.8, rng), _probabilities(y, 0.7, rng)


def test_node_fits_on_validation_rows_only_and_matches_rows_not_positions():
    rows, y, split, a, b = _two_components(2)
    first = _frame(rows, y, a, split)
    second = _frame(rows, y, b, split).iloc[::-1]  # another order: matched by `row`
    summaries = [
        {"task": "binary", "architecture": "cnn"},
        {"task": "binary", "architecture": "texture"},
    ]
    model, summary, predictions = fit_hybrid(TASK, {}, first, second, *summaries)
    assert summary["val_patches"] == 160 and summary["components"] == [
        "binary.cnn",
        "binary.texture",
    ]
    assert predictions["row"].tolist() == sorted(rows)
    assert np.allclose(predictions[["p_normal", "p_ssc"]].sum(axis=1), 1.0)
    # the test rows' truth never reaches the fit: scrambling it changes nothing
    scrambled = first.copy()
    scrambled.loc[scrambled["split"] == "test", "y_true"] = 0
    _, _, again = fit_hybrid(TASK, {}, scrambled, second, *summaries)
    np.testing.assert_allclose(again["p_ssc"], predictions["p_ssc"])


def test_validation_rows_get_cross_fitted_probabilities_never_in_sample_ones():
    """The stacker is fitted on the validation rows: scoring them with the refitted stacker
    would be in-sample and win the hybrid the registry's validation ranking. Each validation
    patient's rows come from stackers fitted without that patient (the chosen C's
    patient-grouped folds); the test rows from the refitted stacker."""
    rows, y, split, a, b = _two_components(3)
    components = [
        ("binary.cnn", _frame(rows, y, a, split)),
        ("binary.texture", _frame(rows, y, b, split)),
    ]
    model, fitted, out = hybrid.fit_on_validation(
        components, ["p_normal", "p_ssc"], {**hybrid.DEFAULTS, "method": "stacked"}
    )
    assert fitted["val_predictions"] == "cross-fitted by patient"
    val = split == "val"
    x = hybrid.stack([a, b])
    refitted = hybrid.predict_proba(model, [a, b], 2)
    np.testing.assert_allclose(out.loc[~val, ["p_normal", "p_ssc"]], refitted[~val])
    assert not np.allclose(out.loc[val, ["p_normal", "p_ssc"]], refitted[val])
    patients = out.loc[val, "patient"].to_numpy()
    expected = hybrid.cross_fitted(
        x[val],
        y[val],
        patients,
        2,
        fitted["C"],
        hybrid.DEFAULTS["folds"],
        0,
        hybrid.DEFAULTS["max_iter"],
    )
    np.testing.assert_allclose(out.loc[val, ["p_normal", "p_ssc"]], expected)
    # a patient's cross-fitted rows never depend on that patient's own labels
    mine = patients == patients[0]
    flipped = np.where(mine, 1 - y[val], y[val])
    again = hybrid.cross_fitted(
        x[val],
        flipped,
        patients,
        2,
        fitted["C"],
        hybrid.DEFAULTS["folds"],
        0,
        hybrid.DEFAULTS["max_iter"],
    )
    np.testing.assert_allclose(again[mine], expected[mine])
    assert not np.allclose(again[~mine], expected[~mine])  # the others' stackers did see them


def test_fewer_than_two_components_skip_with_a_reason():
    frame = _frame(np.arange(8), np.zeros(8, int), np.full((8, 2), 0.5), np.array(["val"] * 8))
    model, summary, predictions = fit_hybrid(
        TASK,
        {},
        frame,
        frame.iloc[:0],
        {"task": "binary", "architecture": "cnn"},
        {"task": "binary", "architecture": "texture", "skipped": "no training patches"},
    )
    assert isinstance(model, Skipped) and "1 ran" in summary["skipped"]
    assert predictions.empty


def test_the_default_vote_averages_the_components_and_fits_nothing():
    rows, y, split, a, b = _two_components(4)
    components = [
        ("binary.cnn", _frame(rows, y, a, split)),
        ("binary.texture", _frame(rows, y, b, split)),
    ]
    model, fitted, out = hybrid.fit_on_validation(components, ["p_normal", "p_ssc"], {})
    assert fitted["method"] == "vote" and fitted["C"] is None
    assert fitted["val_predictions"] == "out-of-sample (nothing fitted)"
    np.testing.assert_allclose(out[["p_normal", "p_ssc"]], (a + b) / 2)
    np.testing.assert_allclose(hybrid.predict_proba(model, [a, b], 2), (a + b) / 2)
    assert hybrid.component_weights(model, ["cnn", "texture"], ["normal", "ssc"]) == {
        "cnn": 0.5,
        "texture": 0.5,
    }
    # labels never reach it: flipping every validation label changes nothing
    flipped = [(n, f.assign(y_true=1 - f["y_true"])) for n, f in components]
    _, _, again = hybrid.fit_on_validation(flipped, ["p_normal", "p_ssc"], {})
    np.testing.assert_allclose(again[["p_ssc"]], out[["p_ssc"]])
    with pytest.raises(ValueError, match="built for 2 components, got 1"):
        hybrid.predict_proba(model, [a], 2)


def test_a_misspelt_hybrid_method_names_the_key():
    rows, y, split, a, b = _two_components(5)
    components = [("binary.cnn", _frame(rows, y, a, split)), ("x", _frame(rows, y, b, split))]
    with pytest.raises(ValueError, match="evaluation.hybrid.method must be one of vote, stacked"):
        hybrid.fit_on_validation(components, ["p_normal", "p_ssc"], {"method": "voting"})
