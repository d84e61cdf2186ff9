"""Grad-CAM (Selvaraju et al. 2017): where in a patch a classifier found its evidence.

Works for the flat CNN and for MobileNetV2, whose convolutions live in a nested
`keras.applications` sub-model. Keras 3 cannot wire a nested model's internal tensors into the
outer graph, so for a nested target layer the outer model's forward pass is rebuilt: its layers
are called in order, with the nested model swapped for a copy that also returns the target
layer's feature maps (same layer objects, same weights).
"""

from __future__ import annotations

import cv2
import keras
import numpy as np
import tensorflow as tf
from keras import layers

from ssc_skin.models import tta

_CONVOLUTIONS = (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D)
# Element-wise layers right after the last convolution: their output is the rectified feature
# map the paper's A^k stands for (our conv blocks are conv -> batch norm -> ReLU).
_ELEMENTWISE = (layers.BatchNormalization, layers.ReLU, layers.Activation)


def grad_cam(
    model: keras.Model,
    images: np.ndarray,
    class_index: int | np.ndarray | None = None,
    layer_name: str | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Grad-CAM heatmaps (N, H, W) in [0, 1] at input resolution, each scaled to its own maximum.

    `class_index`: None explains each image's predicted class, an int one class for all images,
    an array one class per image. `layer_name` defaults to the last convolutional feature map
    (descending into a nested backbone). The score differentiated is the pre-softmax logit:
    softmax gradients vanish on confident predictions. A test-time-augmentation wrapper is
    looked through: the map explains the trained network on the patch as it is.
    """
    model = tta.base_model(model)
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
    container, layer = _find_layer(model, layer_name or default_layer_name(model))
    features_model = _features_model(model, container, layer)
    targets = _class_indices(class_index, len(images), int(model.outputs[0].shape[-1]))
    maps = [
        _batch_cam(model, features_model, images[i : i + batch_size], targets[i : i + batch_size])
        for i in range(0, len(images), batch_size)
    ]
    cams = np.concatenate(maps) if maps else np.zeros((0, *images.shape[1:3]), np.float32)
    return _to_input_resolution(cams, images.shape[1:3])


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The image with the heatmap blended on top in the JET colormap (red = most evidence)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, np.float32)), 0.0, 1.0)
    if heat.shape != image.shape[:2]:
        heat = cv2.resize(heat, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    colours = cv2.applyColorMap(np.round(heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colours = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB).astype(np.float32)
    blended = (1 - alpha) * image[..., :3].astype(np.float32) + alpha * colours
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def default_layer_name(model: keras.Model) -> str:
    """The last convolution's feature map, after the batch norm / activation that follow it
    (`block3_relu2` in our CNN, `out_relu` in MobileNetV2)."""
    ordered = _walk(model)
    conv_positions = [i for i, (_, layer) in enumerate(ordered) if isinstance(layer, _CONVOLUTIONS)]
    if not conv_positions:
        raise ValueError(f"model {model.name!r} has no convolution layer for Grad-CAM")
    i = conv_positions[-1]
    container = ordered[i][0]
    while (
        i + 1 < len(ordered)
        and ordered[i + 1][0] is container
        and isinstance(ordered[i + 1][1], _ELEMENTWISE)
    ):
        i += 1
    return ordered[i][1].name


def _walk(model: keras.Model) -> list[tuple[keras.Model | None, layers.Layer]]:
    """The model's layers in order, one level of nested models expanded; each with its nested
    container (None for the outer model's own layers)."""
    found: list[tuple[keras.Model | None, layers.Layer]] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += [(layer, inner) for inner in layer.layers]
        else:
            found.append((None, layer))
    return found


def _find_layer(model: keras.Model, name: str) -> tuple[keras.Model | None, layers.Layer]:
    for container, layer in _walk(model):
        if layer.name == name:
            return container, layer
    raise ValueError(f"no layer {name!r} in model {model.name!r} or its nested models")


def _features_model(
    model: keras.Model, container: keras.Model | None, layer: layers.Layer
) -> keras.Model:
    """A model from the input to (target feature maps, input of the classifier's last layer).

    The last layer is left out so that the score can be taken before its softmax.
    """
    head = model.layers[-1]
    if container is None:
        return keras.Model(model.inputs, [layer.output, head.input])
    if container is head:
        raise ValueError("Grad-CAM needs a classifier layer after the nested model")
    split = keras.Model(container.inputs, [layer.output, container.outputs[0]])
    problem = (
        f"model {model.name!r} is not a chain of single-input layers; Grad-CAM of a "
        "layer inside a nested model needs one"
    )
    try:
        replay = _replay(model, container, split)
    except (ValueError, TypeError) as error:
        raise ValueError(problem) from error
    if not _reproduces(model, replay):
        raise ValueError(problem)
    return replay


def _replay(model: keras.Model, container: keras.Model, split: keras.Model) -> keras.Model:
    """The outer forward pass rebuilt layer by layer, `container` replaced by `split`."""
    inputs = keras.Input(model.inputs[0].shape[1:], dtype=model.inputs[0].dtype)
    x, features = inputs, None
    for outer in model.layers[:-1]:
        if isinstance(outer, layers.InputLayer):
            continue
        if outer is container:
            features, x = split(x)
        else:
            x = outer(x)
    return keras.Model(inputs, [features, x])


def _reproduces(model: keras.Model, replay: keras.Model) -> bool:
    """Whether the rebuilt forward pass computes what the model does, on a fixed random probe:
    a branching outer model could replay without error yet compute something else."""
    shape = (1, *model.inputs[0].shape[1:])
    probe = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    expected = keras.ops.convert_to_numpy(model(probe, training=False))
    _, head_input = replay(probe, training=False)
    got = keras.ops.convert_to_numpy(model.layers[-1](head_input, training=False))
    return bool(np.allclose(expected, got, rtol=1e-4, atol=1e-5))


def _scores(head: layers.Layer, head_input: tf.Tensor) -> tf.Tensor:
    """Class scores: the logits when the last layer is a softmax Dense, else its output."""
    if isinstance(head, layers.Dense) and head.activation is keras.activations.softmax:
        logits = keras.ops.matmul(head_input, head.kernel)
        return logits + head.bias if head.use_bias else logits
    return head(head_input, training=False)


def _class_indices(class_index: int | np.ndarray | None, n: int, n_classes: int) -> np.ndarray:
    if class_index is None:
        return np.full(n, -1)  # resolved to the predicted class per batch
    indices = np.broadcast_to(np.asarray(class_index, dtype=np.int64), (n,)).copy()
    if ((indices < 0) | (indices >= n_classes)).any():
        raise ValueError(f"class_index must lie in [0, {n_classes}), got {class_index}")
    return indices


def _batch_cam(
    model: keras.Model, features_model: keras.Model, images: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """Feature maps weighted by their spatially averaged gradients, rectified (Eq. 1-2)."""
    x = tf.convert_to_tensor(images, tf.float32)
    with tf.GradientTape() as tape:
        features, head_input = features_model(x, training=False)
        tape.watch(features)  # a frozen backbone has no trainable variables for it to follow
        scores = _scores(model.layers[-1], head_input)
        predicted = tf.argmax(scores, axis=-1, output_type=tf.int64)
        chosen = tf.where(targets < 0, predicted, tf.convert_to_tensor(targets, tf.int64))
        # images do not interact in inference mode: one summed score gives per-image gradients
        score = tf.reduce_sum(tf.gather(scores, chosen, axis=1, batch_dims=1))
    gradients = tape.gradient(score, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
    return cams.numpy().astype(np.float32)


def _to_input_resolution(cams: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling, then each map divided by its maximum (all-zero maps stay zero)."""
    height, width = size
    out = np.zeros((len(cams), height, width), np.float32)
    for i, cam in enumerate(cams):
        resized = cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
        peak = float(resized.max())
        if peak > 0:
            out[i] = np.clip(resized / peak, 0.0, 1.0)
    return out
