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
