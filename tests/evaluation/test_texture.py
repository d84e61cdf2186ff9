import cv2
import numpy as np
import pytest

from ssc_skin.evaluation import texture


def _stripes(rng, n, period=6, size=48):
    """Parallel pink bands at a random angle (packed, aligned collagen)."""
    out = []
    yy, xx = np.mgrid[:size, :size]
    for _ in range(n):
        angle = rng.uniform(0, np.pi)
        wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
        out.append(_pink(wave + rng.normal(0, 0.3, (size, size))))
    return np.stack(out)


def _blobs(rng, n, size=48):
    """The same colours in isotropic speckle (loose, wavy stroma)."""
    out = []
    for _ in range(n):
        noise = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 1.5)
        out.append(_pink(noise / noise.std() + rng.normal(0, 0.3, (size, size))))
    return np.stack(out)


def _pink(field):
    """Ranks -> colours: every patch has the same colour histogram, whatever its texture."""
    t = (np.argsort(np.argsort(field.ravel())) / (field.size - 1)).reshape(field.shape)[..., None]
    light, dark = np.array([245, 210, 225]), np.array([200, 90, 150])
    return (light * (1 - t) + dark * t).astype(np.uint8)


def test_features_are_finite_and_unchanged_by_90_degree_rotations_and_flips():
    rng = np.random.default_rng(0)
    patch = _blobs(rng, 1)[0]
    base = texture.patch_features(patch)
    assert np.isfinite(base).all()
    for turned in (np.rot90(patch), np.fliplr(patch), np.rot90(patch, 2)):
        np.testing.assert_allclose(
            texture.patch_features(np.ascontiguousarray(turned)), base, rtol=0.05, atol=5e-3
        )


@pytest.mark.parametrize(
    "patch",
    [
        np.full((32, 32, 3), 255, np.uint8),  # glass
        np.zeros((32, 32, 3), np.uint8),
        np.repeat(np.arange(32, dtype=np.uint8)[None, :, None] * 8, 32, 0).repeat(3, 2),
    ],
)  # grayscale ramp
def test_flat_glass_black_and_grayscale_patches_give_finite_features(patch):
    assert np.isfinite(texture.patch_features(patch)).all()


def test_texture_separates_what_colour_alone_cannot():
    rng = np.random.default_rng(1)
    x = np.concatenate([_stripes(rng, 60), _blobs(rng, 60)])
    y = np.repeat([1, 0], 60)
    order = rng.permutation(len(y))
    features = texture.features(x[order])
    y = y[order]
    model, chosen = texture.fit((features[:80], y[:80]), (features[80:100], y[80:100]), 2)
    accuracy = np.mean(texture.predict_proba(model, features[100:], 2).argmax(1) == y[100:])
    assert accuracy >= 0.9
    assert chosen["C"] in texture.DEFAULTS["C"]
    colour_only = texture.fit((features[:80, :96], y[:80]), (features[80:100, :96], y[80:100]), 2)[
        0
    ]
    colour_accuracy = np.mean(colour_only.predict(features[100:, :96]) == y[100:])
    assert colour_accuracy < accuracy


def test_probabilities_cover_a_class_missing_from_training():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 5))
    y = np.repeat([0, 2], 15)  # class 1 absent
    model, _ = texture.fit((x, y), (x[:4], y[:4]), 3, {"C": [1.0]})
    proba = texture.predict_proba(model, x, 3)
    assert proba.shape == (30, 3) and np.allclose(proba[:, 1], 0)
    np.testing.assert_allclose(proba.sum(1), 1)


def test_empty_input_gives_an_empty_matrix_of_the_right_width():
    width = len(texture.patch_features(np.zeros((16, 16, 3), np.uint8)))
    assert texture.features(np.zeros((0, 16, 16, 3), np.uint8)).shape == (0, width)


# ---------- the batch `features` against the one-patch reference `patch_features` ----------

# Colour and LBP histograms come out bit for bit equal. The Gabor energies are computed another
# way (matrix products in a cosine domain, a kernel and its mirror image at once) and the
# orientation statistics' means in another summation order, so both differ by float32
# rounding: ~3e-8 at most observed. A wrong border, bin rule or filter moves at least one
# pixel's share of a histogram (1/4096 for 64 x 64), or a Gabor energy by far more.
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


def _per_patch(patches, options=None):
    return np.stack([texture.patch_features(p, options) for p in patches])


def _assert_batch_matches_reference(patches, options=None):
    batch = texture.features(patches, options)
    assert batch.dtype == np.float32
    np.testing.assert_allclose(batch, _per_patch(patches, options), **TOLERANCE)


def _ramp(size=32, descending=False):
    """Gray horizontal ramp; descending, its gradients point at angle pi (arctan2(0, -x)),
    which np.mod folds to 0."""
    row = np.arange(size, dtype=np.uint8) * (255 // size)
    row = row[::-1] if descending else row
    return np.repeat(row[None, :, None], size, 0).repeat(3, 2)


def test_batch_features_equal_the_per_patch_reference_on_random_patches():
    rng = np.random.default_rng(3)
    patches = rng.integers(0, 256, (12, 64, 64, 3), dtype=np.uint8)
    reference = _per_patch(patches)
    assert np.ptp(reference, axis=0).max() > 0.05  # patches differ: not a trivial comparison
    np.testing.assert_allclose(texture.features(patches), reference, **TOLERANCE)


def test_batch_features_equal_the_reference_on_tissue_like_texture():
    rng = np.random.default_rng(4)
    _assert_batch_matches_reference(np.concatenate([_stripes(rng, 3, 6, 64), _blobs(rng, 3, 64)]))


@pytest.mark.parametrize(
    "patch",
    [
        np.full((64, 64, 3), 255, np.uint8),  # glass
        np.zeros((64, 64, 3), np.uint8),
        np.full((64, 64, 3), (230, 180, 200), np.uint8),  # flat pink
        _ramp(64),  # gray as RGB
        _ramp(64, descending=True),  # gradient angles of exactly pi
    ],
    ids=["white", "black", "flat-pink", "gray-ramp", "gray-ramp-descending"],
)
def test_batch_features_equal_the_reference_on_flat_and_grayscale_patches(patch):
    rng = np.random.default_rng(5)
    noisy = rng.integers(0, 256, patch.shape, dtype=np.uint8)
    _assert_batch_matches_reference(np.stack([patch, noisy, patch]))


def test_grayscale_as_rgb_gives_the_reference_features():
    rng = np.random.default_rng(6)
    gray = rng.integers(0, 256, (4, 64, 64, 1), dtype=np.uint8)
    _assert_batch_matches_reference(np.repeat(gray, 3, axis=3))


@pytest.mark.parametrize("shape", [(32, 32), (48, 40), (40, 56), (16, 16), (9, 12)])
def test_batch_features_equal_the_reference_on_small_and_non_square_patches(shape):
    """Down to patches smaller than the Gabor kernels (REFLECT_101 then wraps around)."""
    rng = np.random.default_rng(7)
    patches = rng.integers(0, 256, (5, *shape, 3), dtype=np.uint8)
    patches[0] = cv2.GaussianBlur(patches[0], (0, 0), 2)
    _assert_batch_matches_reference(patches)


def test_batch_features_equal_the_reference_with_other_options():
    rng = np.random.default_rng(8)
    options = {
        "colour_bins": 10,  # bin widths 25.6 and 18 (hue): calcHist's floor rule decides
        "gabor_wavelengths": [5.5, 12.0],
        "gabor_orientations": 6,
        "lbp_radii": [1, 3],
        "orientation_bins": 12,
    }
    patches = rng.integers(0, 256, (4, 48, 48, 3), dtype=np.uint8)
    _assert_batch_matches_reference(patches, options)


def test_a_patch_gets_the_same_row_whatever_else_is_in_the_batch(monkeypatch):
    """Bit for bit, as with the per-patch loop: the fold-isolation test recognises a patch's
    features computed in another batch by their bytes."""
    rng = np.random.default_rng(9)
    patches = rng.integers(0, 256, (7, 48, 40, 3), dtype=np.uint8)
    whole = texture.features(patches)
    alone = np.concatenate([texture.features(p[None]) for p in patches])
    np.testing.assert_array_equal(whole, alone)
    order = rng.permutation(len(patches))
    np.testing.assert_array_equal(texture.features(patches[order]), whole[order])
    monkeypatch.setattr(texture, "_CHUNK_PATCHES", 3)
    np.testing.assert_array_equal(texture.features(patches), whole)
    np.testing.assert_allclose(whole, _per_patch(patches), **TOLERANCE)


def test_an_empty_batch_gives_zero_rows_of_the_reference_width():
    width = len(texture.patch_features(np.zeros((64, 64, 3), np.uint8)))
    for patches in (np.zeros((0, 64, 64, 3), np.uint8), np.zeros((0, 8, 8, 3))):
        out = texture.features(patches)
        assert out.shape == (0, width) and out.dtype == np.float32


@pytest.mark.parametrize(
    ("shape", "kernel_shapes"),
    [
        ((12, 9), [(3, 5), (7, 7)]),
        ((10, 14), [(9, 3), (5, 11)]),
        ((8, 10), [(21, 13), (3, 3)]),  # kernels larger than the patch
        ((2, 7), [(3, 3), (5, 1)]),
    ],
)
def test_cosine_domain_filtering_equals_cv2_filter2d(shape, kernel_shapes):
    """The filtering behind the batch Gabor energies, for any kernel (not only the symmetric
    Gabor ones), several kernels in a row through the same `_CosineFilter`."""
    rng = np.random.default_rng(10)
    x = rng.random((3, *shape), dtype=np.float32)
    filtered = texture._CosineFilter(x)
    for kernel_shape in kernel_shapes:
        kernel = rng.normal(size=kernel_shape).astype(np.float32)
        got = filtered(texture._kernel_terms(kernel, *shape))
        reference = np.stack([cv2.filter2D(p, cv2.CV_32F, kernel) for p in x])
        # both are float32 sums of up to ~300 products in different orders: equal to a few
        # units of float32 rounding of the largest possible output, sum(|kernel|) for x <= 1
        scale = float(np.abs(kernel).sum())
        np.testing.assert_allclose(got, reference, rtol=0, atol=1e-6 * scale)


def test_the_gabor_bank_computes_mirror_image_kernels_together():
    bank = texture._gabor_bank((4.0, 8.0), 4, 64, 64)
    # 0 and 90 degrees alone; 45 degrees together with 135 degrees, its mirror image
    assert [[mirrored for _, mirrored in row] for row in bank] == [[False, True, False]] * 2


def test_fast_angle_folding_equals_np_mod():
    pi = np.float32(np.pi)
    tiny = np.float32(1e-10)
    special = np.array([-pi, -tiny, -0.0, 0.0, tiny, pi, np.nextafter(-pi, 0)], np.float32)
    angles = np.concatenate([special, np.random.default_rng(11).uniform(-pi, pi, 10_000)])
    angles = angles.astype(np.float32)
    np.testing.assert_array_equal(texture._mod_pi(angles), np.mod(angles, np.pi))


def test_angle_edges_bin_angles_as_np_histogram_does():
    """Angles a float32 step either side of each bin edge, where the float64 edges and their
    float32 roundings disagree about the bin."""
    bins = 12
    edges = np.linspace(0, np.pi, bins + 1).astype(np.float32)
    angles = np.concatenate(
        [edges, np.nextafter(edges, np.float32(0)), np.nextafter(edges, np.float32(4))]
    )
    angles = angles[(angles >= 0) & (angles <= np.float32(np.pi))]
    index = (angles[:, None] >= texture._angle_edges(bins)).sum(axis=1)
    expected, _ = np.histogram(angles, bins=bins, range=(0, np.pi))
    np.testing.assert_array_equal(np.bincount(index, minlength=bins), expected)
