"""TFLite export: the converted model must say what the Keras model says, and say it fast."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from ssc_skin.inference import export
from ssc_skin.models.builders import build_cnn

SIZE = 32


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_cnn(input_size=SIZE, n_classes=2, filters=(8, 16))


@pytest.fixture(scope="module")
def patches() -> np.ndarray:
    """Smooth colour fields with noise: pixel statistics closer to tissue than white noise."""
    rng = np.random.default_rng(1)
    base = rng.uniform(60, 230, (96, 1, 1, 3))
    noise = rng.normal(0, 25, (96, SIZE, SIZE, 3))
    return np.clip(base + noise, 0, 255).round().astype(np.float32)


@pytest.fixture(scope="module")
def reference(model: keras.Model, patches: np.ndarray) -> np.ndarray:
    return export.keras_predictor(model)(patches)


def test_float32_tflite_matches_keras(model, patches, reference):
    classifier = export.TFLiteClassifier(export.to_tflite(model), num_threads=2, batch_size=32)
    assert classifier.input_shape == (SIZE, SIZE, 3)
    result = export.agreement(reference, classifier.predict(patches))
    assert result["label_agreement"] == 1.0
    assert result["max_abs_probability_difference"] < 1e-4


def test_int8_tflite_is_close_to_keras(model, patches, reference):
    """Full-integer int8: uint8 input on an exact grid (scale 1), float probabilities out.

    Output probabilities are quantised in steps of 1/256 and every activation is rounded to 256
    levels, so differences of a few hundredths are expected. An untrained model puts many
    patches within a hair of 0.5, where such an error flips the label: a few flips are
    quantisation, and more than 1 in 10 would mean broken calibration (e.g. activation ranges
    clipped), which shows as label agreement near chance.
    """
    representative = export.representative_sample(patches, n=48)
    model_bytes = export.to_tflite(model, representative, quantize="int8")
    classifier = export.TFLiteClassifier(model_bytes)
    assert classifier.input_dtype == np.uint8
    result = export.agreement(reference, classifier.predict(patches))
    assert result["label_agreement"] >= 0.9
    assert result["max_abs_probability_difference"] < 0.05
    assert len(model_bytes) < 0.4 * len(export.to_tflite(model))


def test_predict_handles_odd_batches_and_empty_input(model, patches, reference):
    classifier = export.TFLiteClassifier(export.to_tflite(model), batch_size=16)
    for n in (1, 17, 16, 3):  # resizes the input tensor up and down between calls
        np.testing.assert_allclose(classifier.predict(patches[:n]), reference[:n], atol=1e-5)
    assert classifier.predict(patches[:0]).shape == (0, 2)


def test_int8_needs_a_representative_set(model):
    with pytest.raises(ValueError, match="representative"):
        export.to_tflite(model, None, quantize="int8")
    with pytest.raises(ValueError, match="quantize"):
        export.to_tflite(model, quantize="float16")


def test_agreement_counts_label_flips():
    reference = np.array([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]])
    candidate = np.array([[0.8, 0.2], [0.6, 0.4], [0.5, 0.5]])
    result = export.agreement(reference, candidate)
    assert result["label_agreement"] == pytest.approx(2 / 3)
    assert result["max_abs_probability_difference"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="shapes"):
        export.agreement(reference, candidate[:2])


def test_latency_reports_consistent_rates(patches):
    calls = []
    result = export.latency(lambda x: calls.append(len(x)), patches[:10], repeats=3, warmup=2)
    assert len(calls) == 5  # warm-up runs happen but are not timed
    assert result["n_patches"] == 10
    assert result["patches_per_second"] > 0
    assert result["ms_per_patch"] * result["patches_per_second"] == pytest.approx(1000.0)


def test_representative_sample_is_a_seeded_subset(patches):
    first = export.representative_sample(patches, n=8, seed=3)
    assert len(first) == 8
    np.testing.assert_array_equal(first, export.representative_sample(patches, n=8, seed=3))
    assert len(export.representative_sample(patches[:5], n=8)) == 5
