import numpy as np

from ssc_skin.imaging.tissue import tissue_mask


def _half_tissue(h=64, w=64):
    image = np.full((h, w, 3), 245, np.uint8)  # glass
    image[:, : w // 2] = (200, 80, 160)  # stained tissue (saturated pink-purple)
    return image


def test_tissue_mask_finds_stained_half():
    mask = tissue_mask(_half_tissue())
    assert mask[:, :30].all()
    assert not mask[:, 34:].any()


def test_tissue_mask_of_blank_glass_is_empty():
    rng = np.random.default_rng(0)
    glass = np.clip(245 + rng.normal(0, 2, (64, 64, 3)), 0, 255).astype(np.uint8)
    assert not tissue_mask(glass).any()
