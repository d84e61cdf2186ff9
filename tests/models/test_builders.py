import keras
import numpy as np
import pytest

from ssc_skin.models import builders


def test_unet_predicts_a_class_map_per_pixel():
    unet = builders.build_unet(32, n_classes=4, base_filters=4, depth=2)
    out = unet.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0)
    assert out.shape == (2, 32, 32, 4)
    np.testing.assert_allclose(out.sum(-1), 1, rtol=1e-4)


def test_unet_rejects_a_size_the_pooling_cannot_halve():
    with pytest.raises(ValueError, match="divisible"):
        builders.build_unet(36, 4, depth=3)


@pytest.mark.parametrize("name, options", [
    ("mobilenetv2", {"alpha": 0.35, "weights": None}),
    ("cnn", {"filters": [4, 8], "dense_units": 8}),
])
def test_registry_builds_classifiers_with_probability_outputs(name, options):
    model = builders.build_classifier(name, 32, 3, options)
    out = model.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out.sum(-1), 1, rtol=1e-4)


def test_unknown_architecture_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed: \\['cnn', 'mobilenetv2'\\]"):
        builders.build_classifier("resnet", 32, 2, {})


def test_imagenet_weights_fall_back_with_a_warning_when_offline(monkeypatch, caplog):
    real = keras.applications.MobileNetV2

    def offline(*args, weights=None, **kwargs):
        if weights == "imagenet":
            raise Exception("URL fetch failure: no network")
        return real(*args, weights=weights, **kwargs)

    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    model = builders.build_mobilenetv2(32, 2, weights="imagenet", weights_fallback=None)
    assert "fallback" in model.weights_source
    assert not model.pretrained  # random fallback: no frozen warm-up, fast BN statistics
    assert "ImageNet weights could not be loaded" in caplog.text
