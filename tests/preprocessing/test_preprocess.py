"""The one preprocessing step: configuration, per-image patch choice and its fallbacks."""

import json

import numpy as np
import pytest

from ssc_skin.cohort import synthetic
from ssc_skin.constants import DERMIS
from ssc_skin.imaging import stain, tiling
from ssc_skin.preprocessing.preprocess import (
    GATING_FALLBACK,
    NOT_ASSESSABLE,
    OK,
    TISSUE_FALLBACK,
    PreprocessConfig,
    Preprocessor,
    choose_patches,
    segment_image,
)

CONFIG = PreprocessConfig(
    patch_size=32, stride=32, min_tissue_fraction=0.5, fallback_patches=2, min_dermis_fraction=0.5
)


def _section(label: str = "early", size: int = 192) -> np.ndarray:
    patient = synthetic.make_patient("P1", label, np.random.default_rng(2))
    return synthetic.render_section(patient, 0, (size, size), artefact_rate=0.0).image


def _all_dermis(patches: np.ndarray) -> np.ndarray:
    """A stand-in UNet that calls every pixel dermis (scores N x s x s x 4)."""
    scores = np.zeros((*patches.shape[:3], 4), np.float32)
    scores[..., DERMIS] = 1.0
    return scores


def test_config_round_trips_through_json_and_names_unknown_or_bad_keys():
    config = PreprocessConfig(normalizer={"method": "reinhard", "mean": [1, 2, 3]})
    assert PreprocessConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown keys.*stide"):
        PreprocessConfig.from_dict({**config.to_dict(), "stide": 3})
    with pytest.raises(ValueError, match="min_tissue_fraction"):
        PreprocessConfig(min_tissue_fraction=1.5)
    with pytest.raises(ValueError, match="patch_size"):
        PreprocessConfig(patch_size=0)


@pytest.mark.parametrize(
    "tissue, dermis, used, selection",
    [
        ([0.9, 0.6, 0.2], [0.9, 0.1, 0.9], [True, False, False], OK),
        ([0.9, 0.6, 0.2], [0.1, 0.1, 0.9], [True, True, False], GATING_FALLBACK),
        ([0.3, 0.1, 0.2], [0.0, 0.0, 0.0], [True, False, True], TISSUE_FALLBACK),
        ([0.3, 0.1, 0.2], [0.9, 0.0, 0.0], [True, False, False], TISSUE_FALLBACK),
        ([], [], [], NOT_ASSESSABLE),
    ],
)
def test_each_image_is_classified_from_the_best_patches_it_has(tissue, dermis, used, selection):
    chosen, how = choose_patches(np.array(tissue), np.array(dermis), CONFIG)
    assert chosen.tolist() == used and how == selection


def test_without_gating_the_dermis_scores_are_not_read():
    off = PreprocessConfig(**{**CONFIG.to_dict(), "use_segmentation": False})
    chosen, how = choose_patches(np.array([0.9, 0.6]), np.array([0.0, 0.0]), off)
    assert chosen.all() and how == OK


def test_a_tissue_covered_tile_is_classified_from_every_patch():
    """A tile cut from inside a section (no glass anywhere): all of it is tissue."""
    patient = synthetic.make_patient("P2", "late", np.random.default_rng(5))
    section = synthetic.render_section(patient, 0, (512, 512), artefact_rate=0.0)
    ys, xs = np.nonzero(section.mask == DERMIS)
    y, x = int(np.median(ys)) - 64, int(np.median(xs)) - 64
    tile = np.ascontiguousarray(section.image[y : y + 128, x : x + 128])
    found = Preprocessor(CONFIG, _all_dermis)(tile)
    assert found.selection == OK and found.used.all() and len(found.used_patches) == 16


def test_glass_only_is_not_assessable_and_says_so():
    glass = np.full((96, 96, 3), 246, np.uint8)
    found = Preprocessor(CONFIG, _all_dermis)(glass)
    assert found.selection == NOT_ASSESSABLE and len(found.used_patches) == 0


def test_only_candidates_are_normalised_and_they_match_normalising_the_whole_image():
    image = _section()
    normalizer = stain.fit_normalizer("macenko", [_section("normal")])
    config = PreprocessConfig(**{**CONFIG.to_dict(), "normalizer": normalizer.to_dict()})
    found = Preprocessor(config, _all_dermis)(image)
    whole = normalizer.transform(image)
    for tile, patch in zip(found.tiles, found.patches, strict=True):
        np.testing.assert_array_equal(patch, tiling.crop(whole, tile, 32))
    assert all(t.tissue_fraction >= 0.5 for t in found.tiles)  # not every tile: candidates
    assert found.n_tissue_tiles >= len(found.tiles)


def test_whole_image_segmentation_keeps_glass_windows_as_background():
    image = _section()
    image[:64, :64] = 247  # a glass corner
    mask = segment_image(Preprocessor(CONFIG, _all_dermis), image)
    assert mask.shape == image.shape[:2]
    assert (mask[:32, :32] == 0).all() and (mask == DERMIS).any()
