"""Patches cut once for every fold: raw crops + each image's stain statistics, normalised per
fold, give exactly the pixels `Preprocessor.cut` gives with that fold's normaliser."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ssc_skin.cohort import synthetic
from ssc_skin.imaging import stain
from ssc_skin.preprocessing import shared_cut
from ssc_skin.preprocessing.preprocess import PreprocessConfig, Preprocessor

CONFIG = PreprocessConfig(patch_size=32, stride=32, min_tissue_fraction=0.5)


def _section(label: str, seed: int, size: int = 160) -> np.ndarray:
    patient = synthetic.make_patient(f"P{seed}", label, np.random.default_rng(seed))
    return synthetic.render_section(patient, 0, (size, size), artefact_rate=0.0).image


def _trichrome(image: np.ndarray) -> np.ndarray:
    """A Masson-like recolouring (pink collagen -> blue): an input the simulator never makes."""
    return np.ascontiguousarray(image[..., [2, 1, 0]])


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_fold_normalisation_of_shared_crops_equals_cutting_with_the_fold_normaliser(method):
    images = [_section("normal", 1), _section("late", 2), _trichrome(_section("early", 3))]
    fitted = stain.fit_normalizer(method, images[:2])
    config = PreprocessConfig.from_dict({**CONFIG.to_dict(), "normalizer": fitted.to_dict()})
    raw = Preprocessor(shared_cut.raw_config(config))
    for image in images:
        expected, tiles = Preprocessor(config).cut(image)
        crops, same_tiles = raw.cut(image)
        assert same_tiles == tiles
        estimate = stain.NORMALIZERS[method]().estimate(image)
        np.testing.assert_array_equal(fitted.transform_from(estimate)(crops), expected)


def test_stain_estimates_are_per_image_and_json_able():
    images = {"im-a": _section("normal", 4), "im-b": np.full((64, 64, 3), 255, np.uint8)}
    loaders = {k: (lambda v=v: Image.fromarray(v)) for k, v in images.items()}
    estimates = shared_cut.stain_estimates(loaders, list(images), "macenko")
    assert set(estimates["im-a"]) == {"stains", "max_concentrations"}
    assert estimates["im-b"] is None  # glass only: left as it is, as `cut` leaves it
    assert shared_cut.stain_estimates(loaders, ["im-a"], "none") == {"im-a": None}
    with pytest.raises(ValueError, match="patches.stain.method"):
        shared_cut.stain_estimates(loaders, ["im-a"], "vahadane")


def test_each_fold_gets_its_own_split_and_the_shared_arrays_are_not_changed():
    raw = {
        "images": np.random.default_rng(0).integers(0, 255, (4, 8, 8, 3), dtype=np.uint8),
        "masks": np.zeros((4, 8, 8), np.uint8),
    }
    before = raw["images"].copy()
    index = pd.DataFrame(
        {
            "row": [0, 1, 2, 3],
            "image": ["a", "a", "b", "c"],
            "patient": ["PAT_0042", "PAT_0042", "PAT_0043", "PAT_0044"],
            "split": shared_cut.UNASSIGNED,
        }
    )
    normalizer = stain.ReinhardNormalizer()
    estimate = {"mean": [50.0, 10.0, 0.0], "std": [5.0, 5.0, 5.0]}
    splits = {"PAT_0042": "test", "PAT_0043": "train", "PAT_0044": "val"}
    arrays, fold_index = shared_cut.normalise_for_fold(
        raw, index, {"a": estimate, "b": None, "c": None}, normalizer, splits
    )
    assert fold_index["split"].tolist() == ["test", "test", "train", "val"]
    np.testing.assert_array_equal(raw["images"], before)  # shared by the next fold
    assert not np.array_equal(arrays["images"][:2], before[:2])  # image a was normalised
    np.testing.assert_array_equal(arrays["images"][2:], before[2:])  # no estimate: as it is
    assert arrays["masks"] is raw["masks"]
    with pytest.raises(ValueError, match="no split in this fold"):
        shared_cut.normalise_for_fold(
            raw, index, {}, normalizer, {"PAT_0042": "train", "PAT_0043": "val"}
        )
