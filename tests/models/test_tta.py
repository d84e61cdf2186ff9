"""Test-time augmentation in the saved graph: the mean over the 4 / 8 orientations of each
patch, the same in Keras, after saving and in TFLite; Grad-CAM looks through it."""

import keras
import numpy as np
import pytest

from ssc_skin.inference import export
from ssc_skin.models import builders, gradcam, training, tta


@pytest.fixture(scope="module")
def trained():
    """A network as training leaves it (random weights are enough: the views must disagree)."""
    return builders.build_cnn(16, 3, filters=(4, 8), dense_units=8, dropout=0.0)


@pytest.fixture(scope="module")
def patches():
    return np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3)).astype(np.uint8)


def _orientations(x):
    flips = [x, x[:, :, ::-1], x[:, ::-1], x[:, ::-1, ::-1]]
    t = x.transpose(0, 2, 1, 3)
    return flips, flips + [t, t[:, :, ::-1], t[:, ::-1], t[:, ::-1, ::-1]]


@pytest.mark.parametrize("name,views", [("flips", 0), ("dihedral", 1)])
def test_the_wrapper_averages_the_orientations(trained, patches, name, views):
    expected = np.mean(
        [training.predict(trained, np.ascontiguousarray(v)) for v in _orientations(patches)[views]],
        axis=0,
    )
    wrapped = tta.with_test_time_augmentation(trained, name)
    got = training.predict(wrapped, patches)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # ... and differs from the single view (the check can fail): orientations disagree.
    assert np.abs(got - training.predict(trained, patches)).max() > 1e-4


def test_a_dihedral_model_is_invariant_to_flips_and_transposes(trained, patches):
    wrapped = tta.with_test_time_augmentation(trained, "dihedral")
    reference = training.predict(wrapped, patches)
    for view in _orientations(patches)[1][1:]:
        np.testing.assert_allclose(
            training.predict(wrapped, np.ascontiguousarray(view)), reference, atol=1e-5
        )


def test_none_is_the_model_itself_and_a_typo_names_the_key(trained):
    assert tta.with_test_time_augmentation(trained, "none") is trained
    with pytest.raises(ValueError, match="test_time_augmentation must be one of none, flips"):
        tta.view_count("dihedarl")


def test_saved_keras_and_tflite_give_the_same_answer(trained, patches, tmp_path):
    wrapped = tta.with_test_time_augmentation(trained, "dihedral")
    reference = training.predict(wrapped, patches)
    wrapped.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(training.predict(loaded, patches), reference, atol=1e-6)
    lite = export.TFLiteClassifier(export.to_tflite(loaded))
    np.testing.assert_allclose(lite.predict(patches), reference, atol=1e-5)
    np.testing.assert_allclose(export.keras_predictor(loaded)(patches), reference, atol=1e-6)


def test_grad_cam_explains_the_trained_network_inside(trained, patches):
    wrapped = tta.with_test_time_augmentation(trained, "dihedral")
    assert tta.base_model(wrapped) is trained and tta.base_model(trained) is trained
    np.testing.assert_allclose(
        gradcam.grad_cam(wrapped, patches, 1), gradcam.grad_cam(trained, patches, 1), atol=1e-6
    )
