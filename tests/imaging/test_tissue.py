"""Tissue detection on what real input looks like, not only on the simulator's sections.

Sections come from the synthetic cohort (ground-truth masks); tissue-covered tiles are cut
entirely inside its dermis; scikit-image's immunohistochemistry image is a real stained
section, nearly all tissue.
"""

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from ssc_skin.cohort.synthetic import generate_cohort
from ssc_skin.imaging.tissue import tissue_mask

EPIDERMIS_OR_DERMIS = (1, 2)


def _half_tissue(h=64, w=64):
    image = np.full((h, w, 3), 245, np.uint8)  # glass
    image[:, : w // 2] = (200, 80, 160)  # stained tissue (saturated pink-purple)
    return image


def _jpeg(image, quality=60):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _gray(image):
    return np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


def _glass(level, size=256, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(level + rng.normal(0, 3, (size, size, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module", params=["he", "masson"])
def sections(request):
    """Sections with glass above the epidermis, some with artefacts (dim light, noise, JPEG)."""
    return list(
        generate_cohort(
            {"normal": 2, "early": 1, "late": 2},
            2,
            size=(768, 768),
            stain=request.param,
            artefact_rate=0.3,
            seed=7,
        )
    )


@pytest.fixture(scope="module")
def thick_sections():
    """Sclerotic skin, tall sections: room for a 512 px tile inside the dermis."""
    return list(generate_cohort({"late": 3}, 1, size=(1024, 640), artefact_rate=0.3, seed=3))


def _dermis_tiles(sections, size):
    """One tile per section lying entirely inside the dermis (where the section allows)."""
    tiles = []
    for section in sections:
        dermis = (section.mask == 2).astype(np.uint8)
        inside = cv2.erode(dermis, np.ones((size, size), np.uint8), anchor=(0, 0))
        ys, xs = np.nonzero(inside[: dermis.shape[0] - size + 1, : dermis.shape[1] - size + 1])
        if len(ys):
            y, x = ys[len(ys) // 2], xs[len(xs) // 2]
            tiles.append(np.ascontiguousarray(section.image[y : y + size, x : x + size]))
    return tiles


def test_tissue_mask_finds_stained_half():
    mask = tissue_mask(_half_tissue())
    assert mask[:, :30].all()
    assert not mask[:, 34:].any()


def test_existing_call_signature_still_works():
    image = _half_tissue()
    np.testing.assert_array_equal(tissue_mask(image, 12, 5, 20), tissue_mask(image))
    assert tissue_mask(image, min_saturation=12, kernel=5, min_darkness=20).dtype == bool


@pytest.mark.parametrize("level", [245, 230, 215])
@pytest.mark.parametrize("compress", [False, True])
def test_an_all_glass_image_has_no_tissue(level, compress):
    """Bright glass and the dim glass of an under-lit scan, raw and JPEG-compressed."""
    glass = _glass(level)
    assert tissue_mask(_jpeg(glass) if compress else glass).mean() < 0.01


def test_whole_sections_separate_glass_and_tissue(sections):
    for section in sections:
        mask = tissue_mask(section.image)
        tissue = np.isin(section.mask, EPIDERMIS_OR_DERMIS)
        assert mask[tissue].mean() > 0.95, section.image_id
    # glass (mask 0) is background: pooled, since a thin glass band at the border is tiny
    glass = np.concatenate([tissue_mask(s.image)[s.mask == 0] for s in sections])
    assert glass.mean() < 0.05


def test_grayscale_sections_separate_glass_and_tissue(sections):
    """Only brightness and flatness tell: wide white clefts of normal dermis are lost."""
    masks = [tissue_mask(_gray(s.image)) for s in sections]
    found = [m[np.isin(s.mask, EPIDERMIS_OR_DERMIS)] for m, s in zip(masks, sections, strict=True)]
    assert min(f.mean() for f in found) > 0.85
    assert np.concatenate(found).mean() > 0.95
    assert (
        np.concatenate([m[s.mask == 0] for m, s in zip(masks, sections, strict=True)]).mean() < 0.05
    )


@pytest.mark.parametrize("size", [128, 224, 512])
def test_tiles_covered_by_tissue_are_all_tissue(sections, thick_sections, size):
    """Tiles cut inside the dermis (as exported from a slide): about 100% tissue, raw,
    JPEG-compressed and as grayscale scans."""
    tiles = _dermis_tiles(sections if size < 512 else thick_sections, size)
    assert len(tiles) >= 2
    for tile in tiles:
        for variant in (tile, _jpeg(tile), _gray(tile)):
            assert tissue_mask(variant).mean() > 0.9
    assert np.mean([tissue_mask(t).mean() for t in tiles]) > 0.97


def test_pale_loose_stroma_is_tissue(sections):
    """Washed-out staining (45% of the optical contrast): still tissue."""
    for tile in _dermis_tiles(sections, 224):
        pale = (255 - (255 - tile.astype(np.float32)) * 0.45).astype(np.uint8)
        assert tissue_mask(pale).mean() > 0.85


def test_a_fully_stained_tile_is_all_tissue():
    """The issue's tile: saturation 64-112 on every pixel (Otsu kept 0.8% of it)."""
    rng = np.random.default_rng(1)
    saturation = rng.integers(64, 113, (224, 224)).astype(np.uint8)
    hsv = np.dstack(
        [
            np.full((224, 224), 160, np.uint8),
            saturation,
            rng.integers(170, 230, (224, 224)).astype(np.uint8),
        ]
    )
    tile = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    assert tissue_mask(tile).mean() > 0.99
    assert tissue_mask(_jpeg(tile)).mean() > 0.99


def test_real_immunohistochemistry_image_is_nearly_all_tissue():
    data = pytest.importorskip("skimage.data")
    image = data.immunohistochemistry()  # colon, DAB + haematoxylin, pale stroma, a lumen
    for variant in (image, _jpeg(image)):
        mask = tissue_mask(variant)
        assert mask.mean() > 0.9
        assert not mask[310:350, 2:12].any()  # the lumen at the left edge is not tissue
    stroma = np.ascontiguousarray(image[260:330, 150:250])  # pale loose stroma between glands
    assert (cv2.cvtColor(stroma, cv2.COLOR_RGB2HSV)[..., 1] < 12).mean() > 0.5  # colourless
    assert tissue_mask(stroma).mean() > 0.9


def test_black_padding_is_not_tissue():
    tile = _half_tissue(96, 96)
    tile[:, 48:] = 0  # a scanner's black padding instead of glass
    assert not tissue_mask(tile)[:, 56:].any()
