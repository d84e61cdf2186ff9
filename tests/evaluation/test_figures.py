import io

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from ssc_skin.evaluation import figures

BINARY = (np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0]), ["normal", "ssc"])
THREE = (np.array([0, 1, 1, 0]), np.array([0, 1, 2, 2]), ["normal", "early", "late"])


def _probabilities(y: np.ndarray, n_classes: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, (len(y), n_classes)) + 2 * np.eye(n_classes)[y]
    return p / p.sum(1, keepdims=True)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40)
    return buffer.getvalue()


def _visible(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_visible()]


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def _samples() -> list[tuple[str, np.ndarray, np.ndarray | None, np.ndarray]]:
    image = np.full((16, 16, 3), 200, np.uint8)
    mask = np.zeros((16, 16), np.int64)
    mask[:4], mask[4:10], mask[10:] = 1, 2, 3
    return [("normal / p1", image, mask, mask), ("early / p2", image, None, np.roll(mask, 2, 0))]


def _gradcam_samples(n: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    heat = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    return [
        (f"late → predicted early (wrong) {i}", np.zeros((16, 16, 3), np.uint8), heat)
        for i in range(n)
    ]


BUILDERS = {
    "confusion": lambda: figures.confusion_matrices_figure(
        {"binary.cnn": BINARY, "three_class.cnn": THREE}
    ),
    "roc": lambda: figures.roc_curves_figure(
        {
            "binary.cnn": (BINARY[0], _probabilities(BINARY[0], 2), BINARY[2]),
            "three_class.cnn": (THREE[0], _probabilities(THREE[0], 3), THREE[2]),
        }
    ),
    "training": lambda: figures.training_curves_figure(
        {
            "binary.cnn": {
                "loss": [1.0, 0.5],
                "val_loss": [1.1, 0.7],
                "accuracy": [0.5, 0.8],
                "val_accuracy": [0.4, 0.7],
            },
            "binary.mobilenetv2": {"loss": [0.9, 0.4, 0.3]},
        }
    ),
    "masks": lambda: figures.mask_overlay_figure(_samples()),
    "gradcam": lambda: figures.gradcam_figure(_gradcam_samples(5)),
}


@pytest.mark.parametrize("name", BUILDERS)
def test_figures_are_deterministic_and_leave_pyplot_alone(name):
    before = plt.get_fignums()
    first, second = BUILDERS[name](), BUILDERS[name]()
    assert isinstance(first, Figure)
    assert plt.get_fignums() == before
    png = _png(first)
    assert png.startswith(b"\x89PNG") and png == _png(second)


@pytest.mark.parametrize("name", ["confusion", "roc", "training"])
def test_empty_inputs_give_a_blank_figure(name):
    builder = {
        "confusion": figures.confusion_matrices_figure,
        "roc": figures.roc_curves_figure,
        "training": figures.training_curves_figure,
    }[name]
    fig = builder({})
    assert _visible(fig) == []
    _png(fig)


def test_confusion_panels_show_counts_and_row_rates():
    fig = figures.confusion_matrices_figure({"binary.cnn": BINARY, "three_class.cnn": THREE})
    counts, rates = fig.axes[0], fig.axes[2]  # row-major: top row counts, bottom row rates
    assert counts.get_title() == "binary.cnn\ncounts"
    assert _texts(counts) == ["1", "1", "1", "2"]
    assert _texts(rates) == ["0.50", "0.50", "0.33", "0.67"]
    assert "late" in [t.get_text() for t in fig.axes[3].get_xticklabels()]
    assert _texts(fig.axes[3])[-3:] == ["n/a"] * 3  # 'late' never true: its rates are undefined


def test_roc_has_one_curve_for_binary_and_one_per_class_otherwise():
    y3 = np.array([0, 1, 2, 0, 1, 2])
    fig = figures.roc_curves_figure(
        {
            "binary.cnn": (BINARY[0], _probabilities(BINARY[0], 2), BINARY[2]),
            "three_class.cnn": (y3, _probabilities(y3, 3), THREE[2]),
        }
    )
    binary, three = (ax.get_legend().get_texts() for ax in fig.axes)
    assert [t.get_text() for t in binary] == ["ssc (AUC = 1.00)"]
    assert [t.get_text().split(" (")[0] for t in three] == ["normal", "early", "late"]


def test_roc_names_a_class_without_examples_instead_of_plotting_it():
    fig = figures.roc_curves_figure({"t": (THREE[0], _probabilities(THREE[0], 3), THREE[2])})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[2] == "late: undefined (one class only)"


def test_training_curves_plot_what_each_history_has():
    fig = BUILDERS["training"]()
    loss_cnn, loss_mnv2, acc_cnn, acc_mnv2 = fig.axes
    assert [line.get_label() for line in loss_cnn.lines] == ["loss", "val_loss"]
    assert len(loss_mnv2.lines) == 1 and not acc_mnv2.lines
    np.testing.assert_array_equal(acc_cnn.lines[0].get_xdata(), [1, 2])


def test_mask_blend_tints_tissue_and_leaves_background():
    image = np.full((2, 2, 3), 200, np.uint8)
    mask = np.array([[0, 1], [2, 3]])
    blended = figures.blend_mask(image, mask)
    np.testing.assert_array_equal(blended[0, 0], image[0, 0])
    assert len({tuple(blended[i, j]) for i, j in ((0, 1), (1, 0), (1, 1))}) == 3


def test_mask_figure_has_a_row_per_sample_and_marks_missing_annotations():
    fig = figures.mask_overlay_figure(_samples())
    assert len(fig.axes) == 6
    assert _texts(fig.axes[4]) == ["no annotation"]
    assert fig.axes[0].get_title() == "normal / p1"


def test_gradcam_grid_titles_and_hides_spare_cells():
    fig = figures.gradcam_figure(_gradcam_samples(5))
    assert len(fig.axes) == 8 and len(_visible(fig)) == 5
    assert fig.axes[0].get_title() == "late → predicted early (wrong) 0"


def test_reliability_diagram_has_one_panel_per_model_with_its_ece():
    y = np.array([0, 1, 1, 0, 1, 1])
    p = _probabilities(y, 2)
    fig = figures.reliability_figure({"binary.cnn": (y, p), "binary.texture": (y, 1 - p)})
    panels = _visible(fig)
    assert len(panels) == 2
    assert panels[0].get_title().startswith("binary.cnn\nECE ")
    assert "over 6" in panels[1].get_title()
    assert _png(fig)[:4] == b"\x89PNG"
    assert len(_visible(figures.reliability_figure({}))) == 0


def test_a_gradcam_figure_without_samples_says_why_instead_of_a_blank_square():
    fig = figures.gradcam_figure([], note="No Grad-CAM: binary.densenet was skipped (disabled)")
    texts = [t.get_text() for t in fig.texts]
    assert texts == ["No Grad-CAM: binary.densenet was skipped (disabled)"]
    assert not fig.axes  # no empty panel
