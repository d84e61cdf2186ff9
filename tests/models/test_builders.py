import h5py
import keras
import numpy as np
import pytest
from keras.src.backend import config
from keras.src.legacy.saving import legacy_h5_format
from keras.src.utils import file_utils

from ssc_skin.models import builders, pretrain


def test_unet_predicts_a_class_map_per_pixel():
    unet = builders.build_unet(32, n_classes=4, base_filters=4, depth=2)
    out = unet.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0)
    assert out.shape == (2, 32, 32, 4)
    np.testing.assert_allclose(out.sum(-1), 1, rtol=1e-4)


def test_unet_rejects_a_size_the_pooling_cannot_halve():
    with pytest.raises(ValueError, match="divisible"):
        builders.build_unet(36, 4, depth=3)


@pytest.mark.parametrize(
    "name, options",
    [
        ("mobilenetv2", {"alpha": 0.35, "weights": None}),
        ("cnn", {"filters": [4, 8], "dense_units": 8}),
        (
            "densenet",
            {"growth_rate": 4, "block_layers": [2, 2], "stem_filters": 8, "dense_units": [8, 4]},
        ),
    ],
)
def test_registry_builds_classifiers_with_probability_outputs(name, options):
    model = builders.build_classifier(name, 32, 3, options)
    out = model.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out.sum(-1), 1, rtol=1e-4)


def test_unknown_architecture_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed: \\['cnn', 'densenet', 'mobilenetv2'\\]"):
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


def _backbone(model):
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def test_densenet_is_densely_connected_with_added_classifier_layers():
    model = builders.build_classifier(
        "densenet",
        32,
        2,
        {"growth_rate": 4, "block_layers": [3], "stem_filters": 8, "dense_units": [16, 8]},
    )
    backbone = _backbone(model)
    concat = [
        layer
        for layer in backbone.layers
        if layer.name.startswith("block0_l") and layer.name.endswith("concat")
    ]
    # each layer adds growth_rate maps to everything before it: 8 + 3 x 4 channels
    assert [c.output.shape[-1] for c in concat] == [12, 16, 20]
    assert [model.get_layer(f"classifier_dense{i}").units for i in (0, 1)] == [16, 8]
    assert model.weights_source == "random" and not model.pretrained


def test_densenet121_variant_uses_keras_densenet():
    model = builders.build_classifier(
        "densenet", 32, 3, {"variant": "densenet121", "weights": None, "dense_units": [8]}
    )
    assert _backbone(model).name.startswith("densenet121")
    assert model.output_shape == (None, 3)


def test_densenet_rejects_a_variant_and_imagenet_for_the_compact_one():
    with pytest.raises(ValueError, match="options.variant must be one of compact, densenet121"):
        builders.build_classifier("densenet", 32, 2, {"variant": "huge"})
    with pytest.raises(ValueError, match="needs variant: densenet121"):
        builders.build_classifier("densenet", 32, 2, {"weights": "imagenet"})


@pytest.mark.parametrize(
    "architecture, options",
    [
        ("mobilenetv2", {"alpha": 0.35}),
        ("densenet", {"growth_rate": 4, "block_layers": [2, 2], "stem_filters": 8}),
    ],
)
def test_weights_from_a_file_the_project_made_are_loaded_and_marked_pretrained(
    tmp_path, architecture, options
):
    made, _ = pretrain.backbone(architecture, 32, options)
    for layer in made.layers:  # weights no random init would give
        layer.set_weights([np.full_like(w, 0.01) for w in layer.get_weights()])
    for path in (tmp_path / "backbone.keras", tmp_path / "backbone.weights.h5"):
        made.save(path) if path.suffix == ".keras" else made.save_weights(path)
        model = builders.build_classifier(architecture, 32, 2, {**options, "weights": str(path)})
        loaded = _backbone(model).get_weights()
        assert all(np.allclose(a, b) for a, b in zip(loaded, made.get_weights(), strict=True))
        assert model.pretrained and model.weights_source == f"file {path.name}"


def test_a_missing_weights_file_names_the_key(tmp_path):
    with pytest.raises(
        ValueError,
        match="architectures.mobilenetv2.options.weights: weights "
        "file .*absent.weights.h5 not found",
    ):
        builders.build_classifier(
            "mobilenetv2", 32, 2, {"weights": str(tmp_path / "absent.weights.h5")}
        )


@pytest.mark.parametrize(
    "size, alpha, name",
    [
        (64, 0.35, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"),
        (224, 1.0, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
        (128, 0.5, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_128_no_top.h5"),
    ],
)
def test_imagenet_cache_file_names(size, alpha, name):
    assert builders.imagenet_cache_file("mobilenetv2", size, alpha) == name


def test_imagenet_weights_come_from_keras_cache_file_without_network(tmp_path, monkeypatch):
    """What the README tells an offline user: the named file in <KERAS_HOME>/models is used."""
    source = keras.applications.MobileNetV2(
        input_shape=(64, 64, 3), alpha=0.35, include_top=False, weights=None, pooling="avg"
    )
    for layer in source.layers:
        layer.set_weights([np.full_like(w, 0.02) for w in layer.get_weights()])
    (tmp_path / "models").mkdir()
    cached = tmp_path / "models" / builders.imagenet_cache_file("mobilenetv2", 64, 0.35)
    with h5py.File(cached, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, source)
    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path))

    def no_network(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    model = builders.build_classifier("mobilenetv2", 64, 2, {"alpha": 0.35, "weights": "imagenet"})
    assert model.weights_source == "imagenet" and model.pretrained
    loaded = _backbone(model).get_weights()
    assert all(np.allclose(a, b) for a, b in zip(loaded, source.get_weights(), strict=True))


def test_a_weights_file_of_another_backbone_names_the_key(tmp_path):
    made, _ = pretrain.backbone("mobilenetv2", 32, {"alpha": 0.5})
    made.save(tmp_path / "alpha05.keras")
    with pytest.raises(ValueError, match="mobilenetv2.options.weights: .*does not fit"):
        builders.build_classifier(
            "mobilenetv2", 32, 2, {"alpha": 0.35, "weights": str(tmp_path / "alpha05.keras")}
        )
