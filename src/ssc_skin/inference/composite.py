"""Classifiers made of more than one file: the colour + texture peer and the hybrid.

A served model or `predict` needs one callable `patches -> class probabilities`. A deep model
is one `.tflite` / `.keras` file; the peer is a scikit-learn pipeline on hand-made features;
the hybrid stacks the deep models and the peer. Both are written as a folder: the component
files plus `classifier.json` saying how to put them together, so the champion of a task can be
any of them and still be served by the same pyfunc and the same preprocessing.

Patches arrive at full patch resolution; each deep component resizes them to its own input
size (as training did), the peer reads them as they are.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssc_skin.evaluation import hybrid, texture
from ssc_skin.imaging import tiling

SPEC = "classifier.json"
KINDS = ("texture", "hybrid")
Classifier = Callable[[np.ndarray], np.ndarray]
ModelLoader = Callable[[Path], Classifier]  # a deep model file -> its classifier


def write_texture(folder: Path, model: Any, n_classes: int, options: dict[str, Any] | None) -> Path:
    """The peer as a folder: its fitted pipeline and feature settings."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "texture.pkl").write_bytes(pickle.dumps(model))
    spec = {"kind": "texture", "n_classes": n_classes, "model": "texture.pkl", "options": options}
    (folder / SPEC).write_text(json.dumps(spec, indent=2))
    return folder


def write_hybrid(
    folder: Path,
    stacker: Any,
    n_classes: int,
    deep: Sequence[tuple[str, Path, int]],
    peer: tuple[Any, dict[str, Any] | None] | None,
) -> Path:
    """The hybrid as a folder: the stacker, each deep component's file and input size (in the
    stacker's component order: deep models first, then the peer), and the peer."""
    folder.mkdir(parents=True, exist_ok=True)
    components: list[dict[str, Any]] = []
    for name, path, input_size in deep:
        target = folder / f"{name}{path.suffix}"
        shutil.copyfile(path, target)
        components.append({"kind": "deep", "file": target.name, "input_size": int(input_size)})
    if peer is not None:
        write_texture(folder / "texture", peer[0], n_classes, peer[1])
        components.append({"kind": "texture", "folder": "texture"})
    (folder / "stacker.pkl").write_bytes(pickle.dumps(stacker))
    spec = {"kind": "hybrid", "n_classes": n_classes, "stacker": "stacker.pkl"}
    (folder / SPEC).write_text(json.dumps({**spec, "components": components}, indent=2))
    return folder


def is_composite(path: str | Path) -> bool:
    return (Path(path) / SPEC).is_file()


def load(folder: str | Path, load_deep: ModelLoader) -> Classifier:
    """The folder's classifier; `load_deep` opens a deep component's file (the caller's
    runtime: LiteRT or Keras). An unknown kind is an error naming it."""
    folder = Path(folder)
    spec = json.loads((folder / SPEC).read_text())
    kind, n_classes = spec.get("kind"), int(spec["n_classes"])
    if kind == "texture":
        model = pickle.loads((folder / spec["model"]).read_bytes())  # noqa: S301 - our artifact
        options = spec.get("options")
        return lambda patches: texture.predict_proba(
            model, texture.features(np.asarray(patches), options), n_classes
        )
    if kind == "hybrid":
        parts = [_component(folder, c, load_deep) for c in spec["components"]]
        stacker = pickle.loads((folder / spec["stacker"]).read_bytes())  # noqa: S301
        return lambda patches: hybrid.predict_proba(
            stacker, [part(np.asarray(patches)) for part in parts], n_classes
        )
    raise ValueError(f"{folder.name}/{SPEC}: unknown classifier kind {kind!r}; known: {KINDS}")


def _component(folder: Path, spec: dict[str, Any], load_deep: ModelLoader) -> Classifier:
    if spec["kind"] == "texture":
        return load(folder / spec["folder"], load_deep)
    deep, size = load_deep(folder / spec["file"]), int(spec["input_size"])
    return lambda patches: deep(tiling.resize_batch(patches, size))
