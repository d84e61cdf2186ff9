"""A colour-only baseline: how far colour alone gets, to prove a cohort needs structure.

If logistic regression on per-image colour histograms separated the classes, a deep model's
accuracy on that cohort would say nothing about tissue structure. The baseline is scored with
patient-grouped cross-validation so that a patient's stain never helps classify that patient.
"""

from __future__ import annotations

import cv2
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def colour_histogram(image: np.ndarray, bins: int = 16) -> np.ndarray:
    """Concatenated, normalised per-channel histograms in RGB and HSV (2 x 3 x bins values)."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    features = []
    for space, ranges in ((image, (256, 256, 256)), (hsv, (180, 256, 256))):
        for channel, top in enumerate(ranges):
            hist = cv2.calcHist([space], [channel], None, [bins], [0, top]).ravel()
            features.append(hist / max(hist.sum(), 1.0))
    return np.concatenate(features)


def grouped_cv_accuracy(
    features: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0
) -> dict[str, float]:
    """Out-of-fold accuracy of logistic regression, folds grouped by patient, stratified."""
    n_groups_per_class = min(len(np.unique(groups[labels == c])) for c in np.unique(labels))
    folds = max(2, min(folds, n_groups_per_class))
    predicted = np.empty_like(labels)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(features, labels, groups):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        model.fit(features[train], labels[train])
        predicted[test] = model.predict(features[test])
    chance = float(np.max(np.bincount(labels)) / len(labels))
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
        "majority_class_rate": chance,
        "folds": folds,
    }
