"""Nodes that make the colour + texture peer and the hybrid servable: each becomes a folder
(`inference.composite`) logged as the same whole-image pyfunc as a deep model, so whichever
model wins a task can be registered as its champion and served."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from ssc_skin import tracking
from ssc_skin.constants import Skipped
from ssc_skin.inference import composite, export, serving
from ssc_skin.preprocessing.preprocess import PreprocessConfig

logger = logging.getLogger(__name__)


def _not_logged(summary: dict[str, Any], enabled: bool) -> str | None:
    if not tracking.is_tracking():
        return "no active MLflow run"
    if not enabled:
        return "export.log_predictor is false"
    return summary.get("skipped")


def _log(
    folder: Path,
    name: str,
    task: dict[str, Any],
    preprocess_config: PreprocessConfig,
    unet_tflite: bytes,
    low_confidence_threshold: float,
    summary: dict[str, Any],
) -> dict[str, Any]:
    """Log `folder` as the task's whole-image predictor (patches at full resolution) into the
    model's nested run; the parent gets a tag with its URI, as for the deep models."""
    config = serving.PredictorConfig(
        class_names=tuple(task["classes"]),
        input_size=PreprocessConfig.from_dict(preprocess_config).patch_size,
        preprocess=preprocess_config,
        low_confidence_threshold=low_confidence_threshold,
    )
    unet_path = folder.parent / "unet.tflite"
    unet_path.write_bytes(unet_tflite)
    run_id = tracking.existing_run(summary.get("mlflow_run_id"))
    with tracking.within(run_id):
        info = serving.log_predictor(
            folder, config, unet_path, name=f"{name.replace('.', '_')}_whole_image_predictor"
        )
    tracking.set_tags({f"{name}.whole_image_predictor_uri": info.model_uri})
    return {"uri": info.model_uri, "runtime": "composite", "run_id": run_id}


def log_texture_predictor(
    classifier: Any,
    summary: dict[str, Any],
    task: dict[str, Any],
    evaluation: dict[str, Any],
    preprocess_config: PreprocessConfig,
    unet_tflite: bytes,
    low_confidence_threshold: float,
    enabled: bool = True,
) -> dict[str, Any]:
    """The colour + texture peer as a servable whole-image predictor."""
    reason = _not_logged(summary, enabled)
    if reason or isinstance(classifier, Skipped):
        return {"uri": None, "reason": reason or str(classifier)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = composite.write_texture(
            Path(tmp) / "classifier", classifier, len(task["classes"]), evaluation.get("texture")
        )
        return _log(
            folder,
            f"{task['name']}.texture",
            task,
            preprocess_config,
            unet_tflite,
            low_confidence_threshold,
            summary,
        )


def log_hybrid_predictor(
    classifier: Any,
    summary: dict[str, Any],
    task: dict[str, Any],
    evaluation: dict[str, Any],
    preprocess_config: PreprocessConfig,
    unet_tflite: bytes,
    low_confidence_threshold: float,
    enabled: bool,
    texture_classifier: Any,
    *deep: Any,
) -> dict[str, Any]:
    """The hybrid as a servable whole-image predictor. `deep`: per architecture of the grid,
    its Keras model, float32 TFLite, export summary and architecture block (4 at a time); the
    hybrid's own component list says which of them it stacks, in which order."""
    reason = _not_logged(summary, enabled)
    if reason or isinstance(classifier, Skipped):
        return {"uri": None, "reason": reason or str(classifier)}
    blocks = {
        f"{task['name']}.{arch['name']}": (model, tflite, exported, arch)
        for model, tflite, exported, arch in zip(*[iter(deep)] * 4, strict=True)
    }
    with tempfile.TemporaryDirectory() as tmp:
        files, peer = [], None
        for name in classifier["components"]:
            if name.endswith(".texture"):
                peer = (texture_classifier, evaluation.get("texture"))
                continue
            model, tflite, exported, arch = blocks[name]
            path = Path(tmp) / f"{name}.keras"
            if exported.get("runtime") == export.FLOAT32 and not isinstance(tflite, Skipped):
                path = path.with_suffix(".tflite")
                path.write_bytes(tflite)
            else:
                model.save(path)
            files.append((name, path, int(arch["input_size"])))
        folder = composite.write_hybrid(
            Path(tmp) / "classifier", classifier["model"], len(task["classes"]), files, peer
        )
        return _log(
            folder,
            f"{task['name']}.hybrid",
            task,
            preprocess_config,
            unet_tflite,
            low_confidence_threshold,
            summary,
        )
