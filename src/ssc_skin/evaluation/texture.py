"""A classical colour + texture classifier: the bar a deep model has to clear.

On real H&E tiles a logistic regression on colour histograms plus Gabor / gradient texture
statistics beat both deep models of this project; only a peer trained on the same patches and
scored by the same evaluation code tells a user whether the deep models earn their cost on
their cohort. Per patch it measures:

- colour: per-channel histograms in RGB and HSV (`baseline.colour_histogram`);
- Gabor energy: mean and spread of the response magnitude over orientations x wavelengths
  (collagen bundle width and spacing), plus how much it depends on orientation;
- local binary patterns (rotation-invariant, uniform) at two radii: micro-texture of nuclei,
  fibres and clefts;
- gradient orientation: a magnitude-weighted orientation histogram (folded to 0-180 degrees and
  sorted, so rotating a patch does not change it) and the structure-tensor coherence: SSc
  collagen runs parallel and packed, normal collagen is wavy and interwoven.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ssc_skin.evaluation.baseline import colour_histogram

DEFAULTS: dict[str, Any] = {
    "colour_bins": 16,
    "gabor_wavelengths": [4.0, 8.0],
    "gabor_orientations": 4,
    "lbp_radii": [1, 2],
    "orientation_bins": 8,
    "C": [0.01, 0.1, 1.0],
    "max_iter": 3000,
}


def _settings(options: dict[str, Any] | None) -> dict[str, Any]:
    return {**DEFAULTS, **(options or {})}


@lru_cache(maxsize=8)
def _gabor_kernels(wavelengths: tuple[float, ...], orientations: int) -> list[list[np.ndarray]]:
    """Per wavelength, one even (cosine) kernel per orientation; zero mean, unit L1 norm so
    that flat regions give no response whatever their brightness."""
    bank = []
    for wavelength in wavelengths:
        row = []
        for k in range(orientations):
            kernel = cv2.getGaborKernel(
                (0, 0),
                sigma=0.56 * wavelength,
                theta=np.pi * k / orientations,
                lambd=wavelength,
                gamma=0.5,
                psi=0,
                ktype=cv2.CV_32F,
            )
            kernel -= kernel.mean()
            row.append(kernel / np.abs(kernel).sum())
        bank.append(row)
    return bank


def _lbp_riu2(gray: np.ndarray, radius: int) -> np.ndarray:
    """Rotation-invariant uniform LBP histogram (P = 8 neighbours at `radius`, 10 bins): codes
    0-8 count the neighbours brighter than the centre on a uniform ring, 9 = non-uniform."""
    padded = np.pad(gray, radius, mode="reflect").astype(np.int16)
    h, w = gray.shape
    centre = gray.astype(np.int16)
    angles = 2 * np.pi * np.arange(8) / 8
    bits = []
    for a in angles:
        dy, dx = -round(radius * np.sin(a)), round(radius * np.cos(a))
        bits.append(padded[radius + dy : radius + dy + h, radius + dx : radius + dx + w] >= centre)
    bits = np.stack(bits)
    transitions = (bits != np.roll(bits, 1, axis=0)).sum(axis=0)
    code = np.where(transitions <= 2, bits.sum(axis=0), 9)
    hist = np.bincount(code.ravel(), minlength=10).astype(np.float32)
    return hist / hist.sum()


def _orientation(gray: np.ndarray, bins: int) -> np.ndarray:
    """Sorted magnitude-weighted orientation histogram, coherence and mean gradient magnitude."""
    g = gray.astype(np.float32) / 255.0
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)
    hist, _ = np.histogram(angle, bins=bins, range=(0, np.pi), weights=magnitude)
    hist = np.sort(hist)[::-1] / max(float(hist.sum()), 1e-9)
    jxx, jyy, jxy = float((gx * gx).mean()), float((gy * gy).mean()), float((gx * gy).mean())
    coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / max(jxx + jyy, 1e-9)
    return np.concatenate([hist, [coherence, float(magnitude.mean())]])


def patch_features(patch: np.ndarray, options: dict[str, Any] | None = None) -> np.ndarray:
    """The colour + texture feature vector of one RGB uint8 patch."""
    settings = _settings(options)
    rgb = np.ascontiguousarray(patch[..., :3], dtype=np.uint8)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    features = [colour_histogram(rgb, settings["colour_bins"])]
    g = gray.astype(np.float32) / 255.0
    for row in _gabor_kernels(
        tuple(float(w) for w in settings["gabor_wavelengths"]), int(settings["gabor_orientations"])
    ):
        energies = np.array([np.abs(cv2.filter2D(g, cv2.CV_32F, k)).mean() for k in row])
        features.append([energies.mean(), energies.std(), energies.max() - energies.min()])
    for radius in settings["lbp_radii"]:
        features.append(_lbp_riu2(gray, int(radius)))
    features.append(_orientation(gray, settings["orientation_bins"]))
    return np.concatenate([np.ravel(f) for f in features]).astype(np.float32)


def features(patches: np.ndarray, options: dict[str, Any] | None = None) -> np.ndarray:
    """Feature matrix (one row per patch) of an (N, H, W, 3) uint8 array."""
    if len(patches) == 0:
        return np.zeros(
            (0, len(patch_features(np.zeros((16, 16, 3), np.uint8), options))), np.float32
        )
    return np.stack([patch_features(p, options) for p in patches])


def fit(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    n_classes: int,
    options: dict[str, Any] | None = None,
    seed: int = 0,
) -> tuple[Pipeline, dict[str, Any]]:
    """Standardised features -> class-balanced logistic regression; the regularisation C is
    chosen on the validation patches (log-loss), as the deep models early-stop on them.

    `train` and `val` are (features, labels). Returns the fitted model and what was chosen.
    """
    settings = _settings(options)
    start = time.perf_counter()
    labels = list(range(n_classes))
    best, best_loss, losses = None, np.inf, {}
    for c in settings["C"]:
        model = make_pipeline(
            StandardScaler(),
            LogisticRegression(
                C=float(c),
                max_iter=int(settings["max_iter"]),
                class_weight="balanced",
                random_state=seed,
            ),
        )
        model.fit(*train)
        loss = (
            log_loss(val[1], _full_proba(model, val[0], n_classes), labels=labels)
            if len(val[1])
            else 0.0
        )
        losses[str(c)] = float(loss)
        if loss < best_loss:
            best, best_loss = model, loss
    return best, {
        "C": float(best[-1].C),
        "val_log_loss": float(best_loss),
        "val_log_loss_by_C": losses,
        "seconds": time.perf_counter() - start,
    }


def _full_proba(model: Pipeline, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities with a column for every class, even one absent from training."""
    proba = np.zeros((len(x), n_classes))
    if len(x):
        proba[:, model[-1].classes_.astype(int)] = model.predict_proba(x)
        proba /= proba.sum(axis=1, keepdims=True)  # float32 features: renormalise exactly
    return proba


def predict_proba(model: Pipeline, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities (N, n_classes) for a feature matrix."""
    return _full_proba(model, x, n_classes)
