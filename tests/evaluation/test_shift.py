"""Stain and scanner shifts (evaluation/shift.py) on tiny synthetic H&E arrays."""

from __future__ import annotations

import numpy as np
import pytest

from ssc_skin.evaluation import shift
from ssc_skin.imaging.stain import RGB_FROM_HED

GLASS = 245


def _stained(concentrations: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    """Pixels of the given (haematoxylin, eosin) OD concentrations, Beer-Lambert."""
    od = concentrations[0] * RGB_FROM_HED[0] + concentrations[1] * RGB_FROM_HED[1]
    rgb = np.clip(256.0 * np.exp(-od) - 1.0, 0, 255).astype(np.uint8)
    return np.broadcast_to(rgb, (*shape, 3)).copy()


@pytest.fixture
def section() -> np.ndarray:
    """48 x 48: glass on top, eosin-only (collagen) band, then a band with nuclei in it."""
    rng = np.random.default_rng(0)
    image = np.full((48, 48, 3), GLASS, np.uint8)
    image[16:32] = _stained((0.0, 0.6), (16, 48))
    image[32:] = _stained((0.1, 0.5), (16, 48))
    for y, x in rng.integers([34, 2], [46, 46], size=(12, 2)):
        image[y - 1 : y + 2, x - 1 : x + 2] = _stained((0.9, 0.2), (3, 3))
    noise = rng.integers(-3, 4, image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


def test_strength_zero_is_the_identity(section):
    assert np.array_equal(shift.apply("hed", section, 0.0, seed=7), section)
    assert np.array_equal(shift.apply("masson", section, 0.0, seed=7), section)


def test_hed_distance_grows_with_strength_for_one_seed(section):
    distances = [
        shift.colour_distance(section, shift.apply("hed", section, s, seed=11))
        for s in (0.0, 0.5, 1.0, 2.0, 3.0, 4.0)
    ]
    assert distances[0] == 0.0
    assert all(b > a for a, b in zip(distances, distances[1:], strict=False)), distances


def test_hed_same_seed_same_image_other_seed_another(section):
    first = shift.apply("hed", section, 2.0, seed=3)
    assert np.array_equal(first, shift.apply("hed", section, 2.0, seed=3))
    assert not np.array_equal(first, shift.apply("hed", section, 2.0, seed=4))


def test_masson_turns_eosin_blue_and_nuclei_dark(section):
    out = shift.masson(section).astype(int)
    before = section.astype(int)
    collagen = np.s_[18:30, 4:44]
    # H&E eosin is pink (red about as bright as blue); Masson collagen is blue
    bluer_before = (before[collagen][..., 2] - before[collagen][..., 0]).mean()
    bluer_after = (out[collagen][..., 2] - out[collagen][..., 0]).mean()
    assert bluer_before < 5
    assert bluer_after > bluer_before + 30
    nuclei = (section[..., 0].astype(int) < 150) & (np.arange(48)[:, None] >= 32)
    assert nuclei.sum() > 20
    # near black: dark and not strongly coloured
    assert out[nuclei].mean() < before[nuclei].mean()
    assert np.ptp(out[nuclei].mean(axis=0)) < 60


def test_masson_half_strength_lies_between(section):
    full = shift.colour_distance(section, shift.masson(section, 1.0))
    half = shift.colour_distance(section, shift.masson(section, 0.5))
    assert 0 < half < full


def test_jpeg_changes_pixels_but_keeps_shape_and_dtype(section):
    out = shift.apply("jpeg", section, 50, seed=0)
    assert out.shape == section.shape and out.dtype == np.uint8
    assert not np.array_equal(out, section)
    assert shift.colour_distance(section, out) < 20  # compression, not a new image


@pytest.mark.parametrize(("name", "strength"), [("hed", 4.0), ("masson", 1.0), ("jpeg", 50)])
def test_white_glass_stays_near_white(section, name, strength):
    out = shift.apply(name, section, strength, seed=5)
    glass = out[2:12].astype(int)  # glass rows, away from the band's JPEG ringing
    assert np.abs(glass - GLASS).max() <= 8


@pytest.mark.parametrize(
    ("name", "strength", "message"),
    [("hed", -1.0, "hed shift"), ("masson", 1.5, "masson shift"), ("jpeg", 0, "jpeg shift")],
)
def test_bad_strength_names_the_shift(section, name, strength, message):
    with pytest.raises(ValueError, match=message):
        shift.apply(name, section, strength, seed=0)


def test_unknown_shift_and_bad_image_are_clear_errors(section):
    with pytest.raises(ValueError, match="unknown shift 'sepia'"):
        shift.apply("sepia", section, 1.0, seed=0)
    with pytest.raises(ValueError, match="uint8 RGB"):
        shift.apply("hed", section.astype(np.float32), 1.0, seed=0)
