"""The hybrid: the deep models and the colour + texture peer combined into one classifier.

The peer reads colour and hand-made texture statistics; the CNNs learn their own filters.
Where their mistakes differ, a vote beats each. Two ways to combine them
(`evaluation.hybrid.method`):

- `vote` (default): the components' class probabilities averaged with equal weights. Nothing
  is fitted, so there is nothing to overfit on the few validation patients of a fold.
- `stacked`: a small multinomial logistic regression on the components' log-probabilities,
  fitted on the **validation** patients only (the component models never trained on them;
  their test patients are never seen), its C by patient-grouped CV among them.

`vote` was chosen on pooled validation patients (README, "The hybrid"): the stacker, scored
cross-fitted, was the worst 3-class model there (17 of 35 validation patient-folds right),
the vote the best (27 of 35).

Everything here is plain numpy / scikit-learn: `fit` takes the components' validation
probabilities and labels, `predict_proba` their probabilities for any patches, in the same
component order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

EPSILON = 1e-4  # probabilities are clipped to [eps, 1]: log(0) would dominate the vote
METHODS = ("vote", "stacked")
DEFAULTS: dict[str, Any] = {"method": "vote", "C": [0.01, 0.1, 1.0], "folds": 3, "max_iter": 2000}


class SoftVote:
    """The components' probabilities averaged with equal weights (the `vote` hybrid): a
    fitted-state object like the stacker, so the composite model and `predict_proba` treat
    both alike."""

    def __init__(self, n_components: int) -> None:
        self.n_components = int(n_components)

    def predict_proba(self, probabilities: Sequence[np.ndarray]) -> np.ndarray:
        if len(probabilities) != self.n_components:
            raise ValueError(
                f"the vote was built for {self.n_components} components, got {len(probabilities)}"
            )
        stack(probabilities)  # the same checks: at least one, equal numbers of patches
        return np.mean([np.asarray(p, np.float64) for p in probabilities], axis=0)


def method_of(options: dict[str, Any] | None) -> str:
    """`evaluation.hybrid.method`, checked."""
    method = str({**DEFAULTS, **(options or {})}["method"])
    if method not in METHODS:
        raise ValueError(
            f"evaluation.hybrid.method must be one of {', '.join(METHODS)}; got {method!r}"
        )
    return method


def stack(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """The stacker's input: every component's clipped log-probabilities side by side
    (N x sum of classes)."""
    if not probabilities:
        raise ValueError("the hybrid needs at least one component model")
    n = {len(p) for p in probabilities}
    if len(n) != 1:
        raise ValueError(f"components disagree on the number of patches: {sorted(n)}")
    return np.concatenate(
        [np.log(np.clip(np.asarray(p, np.float64), EPSILON, 1.0)) for p in probabilities], axis=1
    )


def _model(c: float, seed: int, max_iter: int) -> Pipeline:
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=c, class_weight="balanced", max_iter=max_iter, random_state=seed),
    )


def _full_proba(model: Pipeline, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities with a column per class, even for a class absent from the fit."""
    proba = np.zeros((len(x), n_classes))
    if len(x):
        proba[:, model[-1].classes_.astype(int)] = model.predict_proba(x)
    return proba


def cross_fitted(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    n_classes: int,
    c: float,
    folds: int,
    seed: int,
    max_iter: int,
) -> np.ndarray:
    """Each patch's probabilities from a stacker fitted on the other patients' patches
    (patient-grouped folds): what the validation patches look like to a model that never
    saw them."""
    held_out = np.zeros((len(y), n_classes))
    for train, test in GroupKFold(folds).split(x, y, groups):
        if len(np.unique(y[train])) < 2:
            held_out[test] = 1.0 / n_classes
            continue
        model = _model(float(c), seed, max_iter).fit(x[train], y[train])
        held_out[test] = _full_proba(model, x[test], n_classes)
    held_out = np.clip(held_out, EPSILON, 1.0)
    return held_out / held_out.sum(axis=1, keepdims=True)


def choose_c(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    n_classes: int,
    options: dict[str, Any],
    seed: int,
) -> tuple[float, dict[str, float], np.ndarray | None]:
    """The regularisation with the lowest patient-grouped cross-validated log-loss on the
    validation patches (a patient's patches never inform their own score), its losses, and the
    chosen C's cross-fitted probabilities (None with fewer than two validation patients)."""
    folds = min(int(options["folds"]), len(np.unique(groups)))
    losses: dict[str, float] = {}
    if folds < 2:
        return float(options["C"][-1]), losses, None
    held_out = {}
    for c in options["C"]:
        held_out[str(c)] = cross_fitted(
            x, y, groups, n_classes, float(c), folds, seed, int(options["max_iter"])
        )
        losses[str(c)] = float(log_loss(y, held_out[str(c)], labels=list(range(n_classes))))
    best = min(losses, key=losses.__getitem__)
    return float(best), losses, held_out[best]


def fit(
    val_probabilities: Sequence[np.ndarray],
    val_labels: np.ndarray,
    val_patients: np.ndarray,
    n_classes: int,
    options: dict[str, Any] | None = None,
    seed: int = 0,
) -> tuple[Pipeline, dict[str, Any]]:
    """The stacker fitted on the validation patches: C by patient-grouped CV among them, then
    refitted on all of them. Returns the model and what was chosen (C, losses), with the
    chosen C's cross-fitted validation probabilities (`val_cross_fitted`, or None)."""
    settings = {**DEFAULTS, **(options or {})}
    start = time.perf_counter()
    x, y = stack(val_probabilities), np.asarray(val_labels, int)
    if len(np.unique(y)) < 2:
        raise ValueError("the hybrid needs validation patches of at least two classes")
    c, losses, held_out = choose_c(x, y, np.asarray(val_patients), n_classes, settings, seed)
    model = _model(c, seed, int(settings["max_iter"])).fit(x, y)
    return model, {
        "C": c,
        "val_log_loss_by_C": losses,
        "components": len(val_probabilities),
        "seconds": time.perf_counter() - start,
        "val_cross_fitted": held_out,
    }


def predict_proba(
    model: Pipeline | SoftVote, probabilities: Sequence[np.ndarray], n_classes: int
) -> np.ndarray:
    """The hybrid's class probabilities from its components' (same order as in `fit`)."""
    if isinstance(model, SoftVote):
        return model.predict_proba(probabilities)
    return _full_proba(model, stack(probabilities), n_classes)


def component_weights(
    model: Pipeline | SoftVote, names: Sequence[str], classes: Sequence[str]
) -> dict:
    """How much the hybrid leans on each component: equal for the vote; for the stacker the
    L2 norm of its standardised coefficients (for the report: a hybrid that ignores the deep
    models says so)."""
    if isinstance(model, SoftVote):
        return {name: round(1.0 / len(names), 3) for name in names}
    coef = np.atleast_2d(model[-1].coef_)
    width = len(classes)
    norms = [float(np.linalg.norm(coef[:, i * width : (i + 1) * width])) for i in range(len(names))]
    total = sum(norms) or 1.0
    return {name: round(norm / total, 3) for name, norm in zip(names, norms, strict=True)}


def aligned(components: Sequence[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """The first component's rows (provenance and truth), in an order every component shares:
    patches are matched by their `row` in the patch array, never by position."""
    reference = components[0][1].sort_values("row").reset_index(drop=True)
    for name, frame in components[1:]:
        if not np.array_equal(np.sort(frame["row"].to_numpy()), reference["row"].to_numpy()):
            raise ValueError(f"hybrid: {name} predicted other patches than {components[0][0]}")
    return reference


def fit_on_validation(
    components: Sequence[tuple[str, pd.DataFrame]],
    columns: Sequence[str],
    options: dict[str, Any],
) -> tuple[Pipeline, dict[str, Any], pd.DataFrame]:
    """Stack the components' prediction frames (`columns`: their class probabilities) on the
    validation patches; returns the stacker, what `fit` chose (with `val_patches`) and the
    stacked probabilities of every patch, in the frame every model's evaluation reads. With
    `method: vote` nothing is fitted: the components' probabilities are averaged, and the
    validation rows are out-of-sample as they are."""
    method = method_of(options)
    frame = aligned(components)
    rows = frame["row"].to_numpy()
    probabilities = [
        p.set_index("row").loc[rows, list(columns)].to_numpy(np.float64) for _, p in components
    ]
    val = (frame["split"] == "val").to_numpy()
    if method == "vote":
        vote = SoftVote(len(components))
        out = frame.drop(columns=list(columns))
        out[list(columns)] = vote.predict_proba(probabilities)
        return (
            vote,
            {
                "method": method,
                "C": None,
                "val_log_loss_by_C": {},
                "components": len(components),
                "seconds": 0.0,
                "val_patches": int(val.sum()),
                "val_predictions": "out-of-sample (nothing fitted)",
            },
            out,
        )
    model, fitted = fit(
        [p[val] for p in probabilities],
        frame.loc[val, "y_true"].to_numpy(int),
        frame.loc[val, "patient"].to_numpy(),
        len(columns),
        options,
        seed=int(options.get("seed", 0)),
    )
    out = frame.drop(columns=list(columns))
    out[list(columns)] = predict_proba(model, probabilities, len(columns))
    # The validation rows are the stacker's own training data: their refitted predictions
    # would score it in-sample (and win it the registry's validation ranking). They get the
    # cross-fitted ones instead, from stackers that never saw that patient.
    held_out = fitted.pop("val_cross_fitted")
    if held_out is not None:
        out.loc[val, list(columns)] = held_out
    validation = "cross-fitted by patient" if held_out is not None else "in-sample"
    return (
        model,
        {**fitted, "method": method, "val_patches": int(val.sum()), "val_predictions": validation},
        out,
    )
