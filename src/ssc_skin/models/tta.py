"""Test-time augmentation inside the model: every patch is classified in its 4 (flips) or 8
(flips and transposes: the dihedral group of the square) orientations and the probabilities
averaged.

A section has no preferred orientation, and the models are trained on flipped and rotated
patches, so each view is an equally valid reading; their mean is steadier than any one.
Chosen on pooled validation patients (README, "Test-time augmentation"). It lives in the
saved Keras graph, not in a predict function, so the evaluation, `predict` (Keras or TFLite)
and the served model cannot disagree about it: the exported TFLite file contains the views.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

VIEWS = {"none": 1, "flips": 4, "dihedral": 8}


def view_count(name: str, key: str = "classification.training.test_time_augmentation") -> int:
    """How many orientations `name` reads (`none` 1, `flips` 4, `dihedral` 8)."""
    if name not in VIEWS:
        raise ValueError(f"{key} must be one of {', '.join(VIEWS)}; got {name!r}")
    return VIEWS[name]


@keras.saving.register_keras_serializable(package="ssc_skin")
class OrientedViews(layers.Layer):
    """A batch of N square patches -> 4N or 8N: the patches, flipped left-right, up-down and
    both; with 8, the same four of the transposed patches. View-major order (all patches in
    view 0, then view 1, ...), so `ViewMean` can fold them back."""

    def __init__(self, views: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if views not in (4, 8):
            raise ValueError(f"views must be 4 or 8, got {views}")
        self.views = views

    def call(self, x: Any) -> Any:
        def four(image: Any) -> list[Any]:
            return [image, ops.flip(image, 2), ops.flip(image, 1), ops.flip(image, (1, 2))]

        views = four(x)
        if self.views == 8:
            views += four(ops.transpose(x, (0, 2, 1, 3)))
        return ops.concatenate(views, axis=0)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        batch = None if input_shape[0] is None else input_shape[0] * self.views
        return (batch, *input_shape[1:])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "views": self.views}


@keras.saving.register_keras_serializable(package="ssc_skin")
class ViewMean(layers.Layer):
    """(views x N, classes) probabilities in view-major order -> (N, classes), their mean."""

    def __init__(self, views: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.views = views

    def call(self, p: Any) -> Any:
        return ops.mean(ops.reshape(p, (self.views, -1, p.shape[-1])), axis=0)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        batch = None if input_shape[0] is None else input_shape[0] // self.views
        return (batch, *input_shape[1:])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "views": self.views}


def with_test_time_augmentation(model: keras.Model, name: str) -> keras.Model:
    """`model` reading every patch in the orientations of `name`, its probabilities averaged;
    `model` itself for `none`. The trained model is nested unchanged (`base_model` finds it)."""
    views = view_count(name)
    if views == 1:
        return model
    inputs = keras.Input(model.input_shape[1:], name="image")
    outputs = ViewMean(views, name="view_mean")(
        model(OrientedViews(views, name="oriented_views")(inputs))
    )
    wrapped = keras.Model(inputs, outputs, name=model.name)
    for attribute in ("weights_source", "pretrained"):
        if hasattr(model, attribute):
            setattr(wrapped, attribute, getattr(model, attribute))
    return wrapped


def base_model(model: keras.Model) -> keras.Model:
    """The trained network inside a test-time-augmentation wrapper (Grad-CAM explains one
    view: the patch as it is); any other model as it is."""
    names = {layer.name for layer in model.layers}
    if {"oriented_views", "view_mean"} <= names:
        return next(layer for layer in model.layers if isinstance(layer, keras.Model))
    return model
