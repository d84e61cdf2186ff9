"""The peer and the hybrid as servable folders give what they gave in the study."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ssc_skin.evaluation import hybrid, texture
from ssc_skin.imaging import tiling
from ssc_skin.inference import composite

rng = np.random.default_rng(0)
PATCHES = rng.integers(0, 255, (24, 32, 32, 3), dtype=np.uint8)
LABELS = np.arange(24) % 2


def _peer():
    x = texture.features(PATCHES)
    model, _ = texture.fit((x, LABELS), (x, LABELS), 2, {"C": [1.0]})
    return model


def _fake_deep(path):
    """A stand-in deep model: P(ssc) from mean redness, at the input size it is handed."""
    assert path.suffix == ".tflite"

    def predict(patches):
        assert patches.shape[1] == 16  # resized to its own input size first
        red = patches[..., 0].mean(axis=(1, 2)) / 255.0
        return np.column_stack([1 - red, red])

    return predict


def test_texture_folder_predicts_what_the_fitted_peer_predicts(tmp_path):
    model = _peer()
    folder = composite.write_texture(tmp_path / "peer", model, 2, None)
    loaded = composite.load(folder, _fake_deep)
    expected = texture.predict_proba(model, texture.features(PATCHES), 2)
    np.testing.assert_allclose(loaded(PATCHES), expected)
    assert composite.is_composite(folder) and not composite.is_composite(tmp_path)


def test_hybrid_folder_stacks_its_components_like_the_study(tmp_path):
    peer = _peer()
    deep_file = tmp_path / "binary.cnn.float32.tflite"
    deep_file.write_bytes(b"not read by the fake loader")
    deep = _fake_deep(deep_file)
    components = [
        deep(tiling.resize_batch(PATCHES, 16)),
        texture.predict_proba(peer, texture.features(PATCHES), 2),
    ]
    stacker, _ = hybrid.fit(components, LABELS, np.arange(24) // 4, 2, {"folds": 2})
    folder = composite.write_hybrid(
        tmp_path / "hybrid", stacker, 2, [("binary.cnn", deep_file, 16)], (peer, None)
    )
    loaded = composite.load(folder, _fake_deep)
    np.testing.assert_allclose(loaded(PATCHES), hybrid.predict_proba(stacker, components, 2))


def test_an_unknown_kind_is_named(tmp_path):
    (tmp_path / composite.SPEC).write_text(json.dumps({"kind": "forest", "n_classes": 2}))
    with pytest.raises(ValueError, match="unknown classifier kind 'forest'"):
        composite.load(tmp_path, _fake_deep)


def test_the_served_model_loads_a_peer_folder_like_a_model_file(tmp_path):
    from ssc_skin.inference import serving  # noqa: PLC0415 - the pyfunc's loader

    model = _peer()
    folder = composite.write_texture(tmp_path / "peer", model, 2, None)
    expected = texture.predict_proba(model, texture.features(PATCHES), 2)
    np.testing.assert_allclose(serving.load_classifier(folder)(PATCHES), expected)
    requirements = serving.pip_requirements(folder)
    assert any(r.startswith("scikit-learn==") for r in requirements)
    assert len(requirements) == len(set(requirements))
