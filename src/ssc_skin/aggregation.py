"""The one rule from patch probabilities to an image's and a patient's call.

The study validates it and `predict`, the slide path and the served model apply it, so the
number in the report is the number a clinic gets:

- an image (or a slide) is the mean class probability over its classified patches;
- a patient is the mean over *all* of the patient's classified patches, whichever image they
  come from, so an image weighs by its patch count (equivalently: the patch-count-weighted
  mean of its image means, which is how `predict` combines image rows);
- the call is the class of highest mean probability (argmax). The report's screening
  threshold (Youden, on validation patients) is reported beside it, not used for the call.

Pure numpy / pandas: no Kedro, no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def group_means(
    probabilities: np.ndarray, keys: Sequence[str] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted unit keys, mean probabilities per unit, patches per unit) of patch rows."""
    frame = pd.DataFrame(np.asarray(probabilities, float), index=np.asarray(keys))
    grouped = frame.groupby(level=0, sort=True)
    return grouped.mean().index.to_numpy(), grouped.mean().to_numpy(), grouped.size().to_numpy()


def pooled_mean(means: np.ndarray, patch_counts: np.ndarray) -> np.ndarray:
    """The mean over all patches of several units (images of one patient), from each unit's
    mean and patch count; units without patches do not count. NaN row when none has any."""
    means = np.asarray(means, float).reshape(len(patch_counts), -1)
    counts = np.asarray(patch_counts, float)
    keep = counts > 0
    if not keep.any():
        return np.full(means.shape[1], np.nan)
    return (means[keep] * counts[keep, None]).sum(axis=0) / counts[keep].sum()


def decide(mean_probabilities: np.ndarray) -> np.ndarray:
    """The call of each unit (row): index of the class of highest mean probability."""
    return np.asarray(mean_probabilities).argmax(axis=-1)
