import keras
import numpy as np
import pytest
from keras import layers

from ssc_skin.models import builders, gradcam

SIZE = 32


def _toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dark noise; class 1 images carry a bright square somewhere in one random quadrant."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (n, SIZE, SIZE, 3)).astype(np.uint8)
    y = rng.integers(0, 2, n)
    quadrant = rng.integers(0, 4, n)
    for i in np.flatnonzero(y):
        row, col = (
            (quadrant[i] // 2) * 16 + rng.integers(2, 8),
            (quadrant[i] % 2) * 16 + rng.integers(2, 8),
        )
        x[i, row : row + 6, col : col + 6] = 230
    return x, y, quadrant


def _tiny_cnn() -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Rescaling(1 / 255.0)(inputs)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalMaxPooling2D()(x)
    outputs = layers.Dense(2, activation="softmax")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def trained() -> keras.Model:
    keras.utils.set_random_seed(0)
    x, y, _ = _toy(128, seed=0)
    model = _tiny_cnn()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=4, batch_size=16, verbose=0)
    return model


@pytest.fixture(scope="module")
def mobilenet() -> keras.Model:
    keras.utils.set_random_seed(0)
    return builders.build_mobilenetv2(SIZE, 3, alpha=0.35, weights=None)


def _quadrant_mass(heatmaps: np.ndarray, quadrants: np.ndarray) -> np.ndarray:
    masses = []
    for heatmap, q in zip(heatmaps, quadrants, strict=True):
        row, col = (q // 2) * 16, (q % 2) * 16
        masses.append(heatmap[row : row + 16, col : col + 16].sum() / max(heatmap.sum(), 1e-9))
    return np.array(masses)


def test_heatmap_mass_follows_the_square(trained):
    x, y, quadrant = _toy(32, seed=100)
    assert (trained.predict(x, verbose=0).argmax(1) == y).mean() > 0.9
    heatmaps = gradcam.grad_cam(trained, x[y == 1], class_index=1)
    assert heatmaps.shape == (int(y.sum()), SIZE, SIZE)
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    assert _quadrant_mass(heatmaps, quadrant[y == 1]).mean() > 0.5  # chance: 0.25


def test_class_index_defaults_to_the_prediction_and_broadcasts(trained):
    x, _, _ = _toy(6, seed=3)
    predicted = trained.predict(x, verbose=0).argmax(1)
    np.testing.assert_allclose(
        gradcam.grad_cam(trained, x), gradcam.grad_cam(trained, x, class_index=predicted), atol=1e-6
    )
    np.testing.assert_allclose(
        gradcam.grad_cam(trained, x, class_index=1),
        gradcam.grad_cam(trained, x, np.ones(6, int)),
        atol=1e-6,
    )


def test_batches_give_the_same_maps_as_one_pass(trained):
    x, _, _ = _toy(5, seed=4)
    np.testing.assert_allclose(
        gradcam.grad_cam(trained, x, 1, batch_size=2), gradcam.grad_cam(trained, x, 1), atol=1e-6
    )


def test_default_layers_are_the_last_rectified_feature_maps(mobilenet):
    cnn = builders.build_cnn(SIZE, 2, filters=(4, 8), dense_units=8)
    assert gradcam.default_layer_name(cnn) == "block1_relu2"
    assert gradcam.default_layer_name(mobilenet) == "out_relu"


def test_mobilenetv2_heatmaps_reach_into_the_nested_backbone(mobilenet):
    x, _, _ = _toy(3, seed=5)
    default = gradcam.grad_cam(mobilenet, x)
    assert default.shape == (3, SIZE, SIZE) and default.dtype == np.float32
    assert default.min() >= 0 and default.max() <= 1
    inner = gradcam.grad_cam(
        mobilenet, x, class_index=[0, 1, 2], layer_name="block_6_expand_relu"
    )  # 4 x 4 at input 32
    assert inner.shape == (3, SIZE, SIZE)
    assert inner.max() == pytest.approx(1.0)
    assert np.ptp(inner, axis=(1, 2)).max() > 0.1  # a map, not a constant


def _backbone_nested() -> keras.Model:
    inner_in = keras.Input((SIZE, SIZE, 3))
    h = layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inner_in)
    h = layers.MaxPooling2D(name="pool")(h)
    h = layers.Conv2D(6, 3, padding="same", activation="relu", name="c2")(h)
    backbone = keras.Model(inner_in, layers.GlobalAveragePooling2D(name="gap")(h), name="backbone")
    inputs = keras.Input((SIZE, SIZE, 3))
    x = backbone(layers.Rescaling(1 / 255.0, name="scale")(inputs))
    return keras.Model(inputs, layers.Dense(3, activation="softmax", name="head")(x))


def _backbone_flat() -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3))
    h = layers.Rescaling(1 / 255.0, name="scale")(inputs)
    h = layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(h)
    h = layers.MaxPooling2D(name="pool")(h)
    h = layers.Conv2D(6, 3, padding="same", activation="relu", name="c2")(h)
    x = layers.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inputs, layers.Dense(3, activation="softmax", name="head")(x))


def test_nested_and_flat_versions_of_one_network_give_the_same_maps():
    keras.utils.set_random_seed(1)
    nested, flat = _backbone_nested(), _backbone_flat()
    backbone = nested.get_layer("backbone")
    for name in ("c1", "c2"):
        flat.get_layer(name).set_weights(backbone.get_layer(name).get_weights())
    flat.get_layer("head").set_weights(nested.get_layer("head").get_weights())
    x, _, _ = _toy(4, seed=6)
    assert gradcam.default_layer_name(nested) == gradcam.default_layer_name(flat) == "c2"
    expected = gradcam.grad_cam(flat, x, class_index=2)
    np.testing.assert_allclose(gradcam.grad_cam(nested, x, class_index=2), expected, atol=1e-5)
    assert expected.max() > 0


def test_a_branching_outer_model_is_refused_for_nested_layers():
    inner_in = keras.Input((SIZE, SIZE, 3))
    features = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, name="c")(inner_in))
    backbone = keras.Model(inner_in, features, name="backbone")
    inputs = keras.Input((SIZE, SIZE, 3))
    side = layers.Dense(4)(layers.GlobalAveragePooling2D()(inputs))
    merged = layers.Add()([backbone(inputs), side])
    model = keras.Model(inputs, layers.Dense(2, activation="softmax")(merged))
    with pytest.raises(ValueError, match="not a chain"):
        gradcam.grad_cam(model, np.zeros((1, SIZE, SIZE, 3), np.uint8))


def test_unknown_layer_and_class_are_refused(trained):
    image = np.zeros((1, SIZE, SIZE, 3), np.uint8)
    with pytest.raises(ValueError, match="no layer 'nope'"):
        gradcam.grad_cam(trained, image, layer_name="nope")
    with pytest.raises(ValueError, match="class_index must lie in"):
        gradcam.grad_cam(trained, image, class_index=2)


def test_overlay_blends_a_colormap_onto_the_image():
    image = np.full((8, 10, 3), 100, np.uint8)
    heatmap = np.zeros((4, 5), np.float32)
    heatmap[0, 0] = 1.0
    blended = gradcam.overlay(image, heatmap)
    assert blended.shape == (8, 10, 3) and blended.dtype == np.uint8
    hot, cold = blended[0, 0].astype(int), blended[-1, -1].astype(int)
    assert hot[0] > hot[2]  # JET: high = red
    assert cold[2] > cold[0]  # low = blue
    np.testing.assert_array_equal(gradcam.overlay(image, heatmap, alpha=0.0), image)
