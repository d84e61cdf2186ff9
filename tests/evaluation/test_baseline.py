import numpy as np

from ssc_skin.evaluation import baseline


def _images(rng, n, colour):
    return [np.clip(rng.normal(colour, 20, (16, 16, 3)), 0, 255).astype(np.uint8) for _ in range(n)]


def test_histogram_is_normalised_per_channel():
    features = baseline.colour_histogram(np.zeros((8, 8, 3), np.uint8), bins=8)
    assert features.shape == (48,)
    np.testing.assert_allclose(features.reshape(6, 8).sum(1), 1)


def test_colour_baseline_separates_colours_and_not_noise():
    rng = np.random.default_rng(0)
    pink = _images(rng, 20, (230, 120, 200))
    blue = _images(rng, 20, (90, 110, 220))
    features = np.stack([baseline.colour_histogram(i) for i in pink + blue])
    labels = np.array([0] * 20 + [1] * 20)
    groups = np.repeat(np.arange(10), 4)  # 4 images per patient, patients never split
    assert baseline.grouped_cv_accuracy(features, labels, groups)["accuracy"] > 0.95
    same = np.stack([baseline.colour_histogram(i) for i in _images(rng, 40, (200, 120, 200))])
    result = baseline.grouped_cv_accuracy(same, labels, groups)
    assert result["accuracy"] < 0.8
    assert result["majority_class_rate"] == 0.5
