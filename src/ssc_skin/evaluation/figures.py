"""Evaluation figures: confusion matrices, ROC curves, training curves, masks and Grad-CAM.

Every function returns a `matplotlib.figure.Figure` built without pyplot, so nothing is left in
pyplot's global figure registry: the Kedro MatplotlibDataset saves it, and the garbage
collector frees it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import ListedColormap, to_rgb  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay  # noqa: E402

from ssc_skin.constants import MASK_NAMES as _MASK_NAMES  # noqa: E402
from ssc_skin.evaluation.metrics import (  # noqa: E402
    confusion,
    expected_calibration_error,
    reliability_table,
)
from ssc_skin.models.gradcam import overlay  # noqa: E402

PANEL = 3.2  # inches per panel side
# background, epidermis, dermis, fat (constants.MASK_CLASSES order)
MASK_COLOURS = ["#ffffff", "#7b3294", "#e7298a", "#fdb863"]
MASK_NAMES = list(_MASK_NAMES)


def confusion_matrices_figure(
    results: dict[str, tuple[np.ndarray, np.ndarray, Sequence[str]]],
) -> Figure:
    """One column per model (key, e.g. "binary.mobilenetv2"): counts on top, and below the
    row-normalised matrix, whose diagonal is each class's sensitivity."""
    n = len(results)
    fig = Figure(figsize=(PANEL * max(n, 1), 2 * PANEL + 0.4), layout="constrained")
    axes = fig.subplots(2, max(n, 1), squeeze=False)
    for col, (name, (y_true, y_pred, class_names)) in enumerate(results.items()):
        counts = np.asarray(confusion(y_true, y_pred, len(class_names)))
        for row, matrix in enumerate((counts, _row_normalised(counts))):
            ax = axes[row, col]
            display = ConfusionMatrixDisplay(matrix, display_labels=list(class_names))
            display.plot(
                ax=ax,
                cmap="Blues",
                colorbar=False,
                values_format=".2f" if row else "d",
                im_kw={"vmin": 0, "vmax": 1} if row else None,
            )
            if row:
                _recolour_rates(display, matrix)
            ax.set_title(f"{name}\n{'row-normalised' if row else 'counts'}", fontsize=10)
    _hide_unused(axes, n)
    return fig


def _row_normalised(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its total; NaN (shown "n/a", not 0) for a class absent from the
    truth, where sklearn's normalize="true" would print a misleading 0."""
    totals = counts.sum(axis=1, keepdims=True).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / totals, np.nan)


def _recolour_rates(display: ConfusionMatrixDisplay, rates: np.ndarray) -> None:
    """sklearn picks text colours from the matrix's midpoint, which a NaN turns into NaN and
    every label white: dark text on light cells, white on dark, grey "n/a" where undefined."""
    for (i, j), text in np.ndenumerate(display.text_):
        if np.isnan(rates[i, j]):
            text.set_text("n/a")
            text.set_color("grey")
        else:
            text.set_color("white" if rates[i, j] > 0.5 else "black")


def roc_curves_figure(results: dict[str, tuple[np.ndarray, np.ndarray, Sequence[str]]]) -> Figure:
    """One panel per model: the positive class's ROC curve for a binary task, one-vs-rest
    curves per class otherwise; AUC in the legend. Classes with no positive or no negative
    example have no ROC curve and are named in the legend instead."""
    n = len(results)
    fig = Figure(figsize=(PANEL * 1.25 * max(n, 1), PANEL * 1.25), layout="constrained")
    axes = fig.subplots(1, max(n, 1), squeeze=False)[0]
    for ax, (name, (y_true, probabilities, class_names)) in zip(
        axes, results.items(), strict=False
    ):
        truth, scores = np.asarray(y_true), np.asarray(probabilities)
        classes = [1] if len(class_names) == 2 else list(range(len(class_names)))
        for k in classes:
            _roc_curve(ax, truth == k, scores[:, k], str(class_names[k]))
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(name, fontsize=10)
        ax.legend(loc="lower right", fontsize=8)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig


def _roc_curve(ax: Axes, positive: np.ndarray, score: np.ndarray, label: str) -> None:
    if positive.all() or not positive.any():
        ax.plot([], [], " ", label=f"{label}: undefined (one class only)")
        return
    RocCurveDisplay.from_predictions(positive.astype(int), score, pos_label=1, name=label, ax=ax)


def training_curves_figure(histories: dict[str, dict[str, list[float]]]) -> Figure:
    """One column per model: loss and val_loss on top, accuracy and val_accuracy below
    (Keras History keys), against the epoch; whichever of the four a history has."""
    n = len(histories)
    fig = Figure(figsize=(PANEL * max(n, 1), 2 * PANEL * 0.85), layout="constrained")
    axes = fig.subplots(2, max(n, 1), squeeze=False)
    for col, (name, history) in enumerate(histories.items()):
        for row, metric in enumerate(("loss", "accuracy")):
            ax = axes[row, col]
            for key, style in ((metric, "-"), (f"val_{metric}", "--")):
                values = history.get(key) or []
                if values:
                    epochs = np.arange(1, len(values) + 1)
                    ax.plot(epochs, values, style, marker="o", markersize=3, label=key)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(metric)
            ax.set_title(name, fontsize=10)
            if ax.lines:
                ax.legend(fontsize=8)
    _hide_unused(axes, n)
    return fig


def blend_mask(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image with each tissue class tinted in its report colour; background untouched so
    that the tissue stays visible."""
    rgb = np.asarray(image, np.float32)[..., :3] / 255.0
    mask = np.asarray(mask)
    colours = np.array([to_rgb(c) for c in MASK_COLOURS], np.float32)
    tint = colours[np.clip(mask, 0, len(colours) - 1)]
    tissue = (mask > 0)[..., None]
    blended = np.where(tissue, (1 - alpha) * rgb + alpha * tint, rgb)
    return np.clip(np.round(blended * 255), 0, 255).astype(np.uint8)


def mask_overlay_figure(
    samples: list[tuple[str, np.ndarray, np.ndarray | None, np.ndarray]],
) -> Figure:
    """One row per sample: the image, the annotated mask blended on it (when there is one) and
    the predicted mask blended on it (background/epidermis/dermis/fat = 0/1/2/3)."""
    n = max(len(samples), 1)
    fig = Figure(figsize=(3 * PANEL * 0.8, n * PANEL * 0.8 + 0.5), layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False)
    for row, (title, image, truth, predicted) in enumerate(samples):
        axes[row, 0].imshow(image)
        axes[row, 0].set_title(title, fontsize=9)
        if truth is None:
            axes[row, 1].text(
                0.5,
                0.5,
                "no annotation",
                ha="center",
                va="center",
                transform=axes[row, 1].transAxes,
                color="grey",
            )
        else:
            axes[row, 1].imshow(blend_mask(image, truth))
            axes[row, 1].set_title("annotated", fontsize=9)
        axes[row, 2].imshow(blend_mask(image, predicted))
        axes[row, 2].set_title("predicted", fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [
        Patch(facecolor=c, edgecolor="grey", label=name)
        for c, name in zip(MASK_COLOURS, MASK_NAMES, strict=True)
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    return fig


def gradcam_figure(
    samples: list[tuple[str, np.ndarray, np.ndarray]], columns: int = 4, note: str = ""
) -> Figure:
    """A grid of Grad-CAM overlays (red = most evidence), each titled by the caller, e.g.
    "late → predicted early (wrong)". Without samples, `note` says why (a skipped model's
    picture must not be a blank square)."""
    if not samples:
        fig = Figure(figsize=(6, 1.2), layout="constrained")
        fig.text(
            0.5,
            0.5,
            note or "No Grad-CAM: no test image to explain.",
            ha="center",
            va="center",
            wrap=True,
            fontsize=10,
        )
        return fig
    n = max(len(samples), 1)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(cols * PANEL * 0.8, rows * PANEL * 0.85), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (title, image, heatmap) in zip(axes, samples, strict=False):
        ax.imshow(overlay(image, heatmap))
        ax.set_title(title, fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(samples) :]:
        ax.set_visible(False)
    return fig


def _hide_unused(axes: np.ndarray, used_columns: int) -> None:
    """An empty input still yields a (blank) figure, so a pipeline never breaks on it."""
    if used_columns == 0:
        for ax in axes.ravel():
            ax.set_visible(False)


def cohort_gallery(
    samples: dict[str, list[tuple[np.ndarray, np.ndarray | None]]], title: str
) -> Figure:
    """One row per class: each sample image followed by its tissue mask."""
    n_rows = len(samples)
    n_cols = 2 * max(len(v) for v in samples.values())
    fig = Figure(figsize=(2.2 * n_cols, 2.3 * n_rows + 0.6))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    cmap = ListedColormap(MASK_COLOURS)
    for row, (label, pairs) in enumerate(samples.items()):
        for i, (image, mask) in enumerate(pairs):
            axes[row, 2 * i].imshow(image)
            if mask is not None:
                axes[row, 2 * i + 1].imshow(
                    mask, cmap=cmap, vmin=0, vmax=len(MASK_COLOURS) - 1, interpolation="nearest"
                )
        axes[row, 0].set_ylabel(label, fontsize=13)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    legend = [
        Patch(facecolor=c, edgecolor="grey", label=n)
        for c, n in zip(MASK_COLOURS, MASK_NAMES, strict=True)
    ]
    fig.legend(handles=legend, loc="lower center", ncol=4, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    return fig


def reliability_figure(results: dict[str, tuple[np.ndarray, np.ndarray]], bins: int = 10) -> Figure:
    """Reliability diagrams, one panel per model: for each confidence bin of the top-label
    probability, the share of right calls (bars) against the diagonal a calibrated model
    follows; the number of predictions in the bin above each bar, the ECE in the title.

    `results`: name -> (class indices, class probabilities) of the predictions to judge.
    """
    n = len(results)
    fig = Figure(figsize=(PANEL * max(n, 1), PANEL * 1.05), layout="constrained")
    axes = fig.subplots(1, max(n, 1), squeeze=False)[0]
    for ax, (name, (y_true, probabilities)) in zip(axes, results.items(), strict=False):
        table = reliability_table(np.asarray(y_true), np.asarray(probabilities), bins)
        used = table[table["count"] > 0]
        ece = expected_calibration_error(np.asarray(y_true), np.asarray(probabilities), bins)
        width = 1.0 / bins
        ax.bar(
            used["low"] + width / 2,
            used["accuracy"],
            width=width * 0.9,
            color="#4c72b0",
            edgecolor="white",
            label="share right",
        )
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="calibrated")
        for row in used.itertuples():
            ax.text(
                row.low + width / 2,
                min(row.accuracy + 0.03, 0.97),
                str(row.count),
                ha="center",
                fontsize=6,
                color="#333",
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("confidence (top-class probability)")
        ax.set_ylabel("share of right calls")
        ax.set_title(f"{name}\nECE {ece:.3f} over {len(np.asarray(y_true))}", fontsize=9)
        ax.legend(loc="upper left", fontsize=7)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig
