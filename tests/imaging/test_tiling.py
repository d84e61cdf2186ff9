import numpy as np
import pytest

from ssc_skin.imaging import tiling
from ssc_skin.imaging.tissue import tissue_mask
from tests.imaging.test_tissue import _half_tissue


def test_grid_tiles_match_a_direct_count():
    rng = np.random.default_rng(1)
    mask = rng.random((100, 90)) > 0.4
    tiles = tiling.grid_tiles(mask, 32, 16, 0.0)
    expected = [(x, y) for y in range(0, 100 - 32 + 1, 16) for x in range(0, 90 - 32 + 1, 16)]
    assert sorted((t.x, t.y) for t in tiles) == sorted(expected)
    for tile in tiles:
        direct = mask[tile.y : tile.y + 32, tile.x : tile.x + 32].mean()
        assert tile.tissue_fraction == pytest.approx(direct)


def test_grid_tiles_drop_patches_with_too_little_tissue():
    mask = tissue_mask(_half_tissue())
    tiles = tiling.grid_tiles(mask, 32, 32, 0.5)
    assert {t.x for t in tiles} == {0}
    assert tiling.grid_tiles(mask[:10, :10], 32, 32, 0.0) == []


def test_resize_batch_changes_size_only_when_needed():
    batch = np.zeros((2, 16, 16, 3), np.uint8)
    assert tiling.resize_batch(batch, 16) is batch
    assert tiling.resize_batch(batch, 8).shape == (2, 8, 8, 3)
