"""Figures for the report (matplotlib, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

# background, epidermis, dermis, fat
MASK_COLOURS = ["#ffffff", "#7b3294", "#e7298a", "#fdb863"]
MASK_NAMES = ["background", "epidermis", "dermis", "fat"]


def cohort_gallery(samples: dict[str, list[tuple[np.ndarray, np.ndarray | None]]],
                   title: str) -> Figure:
    """One row per class: each sample image followed by its tissue mask."""
    n_rows = len(samples)
    n_cols = 2 * max(len(v) for v in samples.values())
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.2 * n_cols, 2.3 * n_rows + 0.6),
                             squeeze=False)
    cmap = ListedColormap(MASK_COLOURS)
    for row, (label, pairs) in enumerate(samples.items()):
        for i, (image, mask) in enumerate(pairs):
            axes[row, 2 * i].imshow(image)
            if mask is not None:
                axes[row, 2 * i + 1].imshow(mask, cmap=cmap, vmin=0, vmax=len(MASK_COLOURS) - 1,
                                            interpolation="nearest")
        axes[row, 0].set_ylabel(label, fontsize=13)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    legend = [Patch(facecolor=c, edgecolor="grey", label=n)
              for c, n in zip(MASK_COLOURS, MASK_NAMES, strict=True)]
    fig.legend(handles=legend, loc="lower center", ncol=4, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    return fig
