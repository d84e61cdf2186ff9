"""Nodes of the `pretrain` pipeline: a classifier backbone pretrained offline, for
`classification.architectures.<arch>.options.weights: <path>` — self-supervised (SimCLR) on
unlabelled patches (a folder of the user's images, or the synthetic pretraining cohort), or
supervised on the synthetic cohort's free targets."""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np

from ssc_skin.cohort import synthetic
from ssc_skin.models import contrastive, pretrain
from ssc_skin.preprocessing import unlabelled

logger = logging.getLogger(__name__)


METHODS = ("simclr", "supervised")


def pretraining_patches(params: dict[str, Any]) -> dict[str, Any]:
    """The pretraining patches: with `images` (a folder), its images' tissue patches, no
    labels (SimCLR only), and `patch_counts` (what was used, what not and why); else a
    synthetic cohort drawn for pretraining only (its own seed, so its patients are not the
    study's), with per-patch compartment shares and severity."""
    method = params.get("method", "simclr")
    if method not in METHODS:
        raise ValueError(f"pretrain.method must be one of {list(METHODS)}; got {method!r}")
    if params.get("images"):
        if method != "simclr":
            raise ValueError(
                "pretrain.images (a folder of unlabelled images) needs pretrain.method: simclr; "
                "supervised pretraining needs the synthetic cohort's masks (pretrain.images: null)"
            )
        images, counts = unlabelled.folder_patches(
            params["images"],
            params["patch_size"],
            params.get("min_tissue_fraction", 0.5),
            params.get("max_patches") or 4000,
            params.get("seed", 0),
        )
        return {"images": images, "patch_counts": counts}
    cohort = params["cohort"]
    size = cohort["image_size"]
    sections = synthetic.generate_cohort(
        patients_per_class=cohort["patients_per_class"],
        images_per_patient=cohort["images_per_patient"],
        size=(size, size),
        stain=cohort.get("stain", "he"),
        difficulty=cohort.get("difficulty", 0.5),
        artefact_rate=cohort.get("artefact_rate", 0.15),
        seed=cohort["seed"],
    )
    arrays = pretrain.tile_sections(
        sections,
        params["patch_size"],
        params.get("min_tissue_fraction", 0.5),
        params.get("max_patches"),
        params.get("seed", 0),
    )
    logger.info(
        "Pretraining cohort: %d patches of %d px from %d synthetic patients",
        len(arrays["images"]),
        params["patch_size"],
        sum(cohort["patients_per_class"].values()),
    )
    return arrays


def pretrain_backbone(
    arrays: dict[str, np.ndarray], params: dict[str, Any], architectures: dict[str, dict[str, Any]]
) -> tuple[keras.Model, dict[str, Any], dict[str, Any]]:
    """Fit the backbone of `pretrain.architecture` (with that classifier block's input size and
    options, so the weights fit it) on the pretext targets; returns the backbone, a summary
    and its final losses for MLflow."""
    name = params["architecture"]
    if name not in architectures:
        raise ValueError(
            f"pretrain.architecture must be one of {sorted(architectures)} "
            f"(classification.architectures); got {name!r}"
        )
    architecture = architectures[name]
    if params.get("method", "simclr") == "simclr":
        base, scale = pretrain.backbone(
            name, architecture["input_size"], architecture.get("options", {})
        )
        simclr = dict(params.get("simclr") or {})
        base, summary = contrastive.pretrain_simclr(
            arrays["images"],
            base,
            scale,
            architecture["input_size"],
            epochs=simclr.pop("epochs", 30),
            batch_size=simclr.pop("batch_size", 128),
            learning_rate=simclr.pop("learning_rate", 2e-3),
            temperature=simclr.pop("temperature", 0.2),
            projection_dim=simclr.pop("projection_dim", 64),
            val_fraction=params.get("val_fraction", 0.1),
            view=simclr,
            seed=params.get("seed", 0),
        )
        summary = {
            **summary,
            "architecture": name,
            "options": {k: v for k, v in architecture.get("options", {}).items() if k != "weights"},
            "source": "folder" if params.get("images") else "synthetic cohort",
            "patch_counts": arrays.get("patch_counts", {}),
        }
        logger.info(
            "Pretrained the %s backbone with SimCLR in %.0f s (%d epochs, %d patches); set "
            "classification.architectures.%s.options.weights to its file",
            name,
            summary["seconds"],
            summary["epochs_run"],
            summary["train_patches"] + summary["val_patches"],
            name,
        )
        return base, summary, _final_losses(summary)
    base, summary = pretrain.pretrain(
        arrays,
        name,
        architecture["input_size"],
        architecture.get("options", {}),
        tuple(params.get("targets", pretrain.TARGETS)),
        params.get("epochs", 8),
        params.get("batch_size", 64),
        params.get("learning_rate", 2e-3),
        params.get("val_fraction", 0.1),
        params.get("seed", 0),
    )
    logger.info(
        "Pretrained the %s backbone in %.0f s (%d epochs; targets %s); set "
        "classification.architectures.%s.options.weights to its file",
        name,
        summary["seconds"],
        summary["epochs_run"],
        ", ".join(summary["targets"]),
        name,
    )
    return base, summary, _final_losses(summary)


def _final_losses(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each loss curve's last value, as the catalog's MLflow metrics dataset takes it."""
    return {k: {"value": v[-1], "step": 0} for k, v in summary["history"].items() if v}
