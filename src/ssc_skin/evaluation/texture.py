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


# ---------- the same features for a whole batch at once ----------
#
# A Python loop over `patch_features` costs about a millisecond a patch, mostly call overhead
# on 64 x 64 arrays. The functions below compute every feature for an (n, h, w) stack with a
# few whole-batch array operations and give the same numbers as `patch_features` up to float
# rounding (the test compares the two).

_CHUNK_PIXELS = 1 << 20  # float32 temporaries of 4 MB; all of a chunk peak at ~45 MB
_CHUNK_PATCHES = 256  # the patch index of a chunk fits the uint8 channel `_patch_histograms` uses


def features(patches: np.ndarray, options: dict[str, Any] | None = None) -> np.ndarray:
    """Feature matrix (one row per patch) of an (N, H, W, 3) uint8 array: row i equals
    `patch_features(patches[i])` up to float rounding, computed a chunk of patches at a time,
    and depends on patch i alone, bit for bit (not on the rest of the batch)."""
    rgb = np.ascontiguousarray(np.asarray(patches)[..., :3], dtype=np.uint8)
    if len(rgb) == 0:
        return np.zeros(
            (0, len(patch_features(np.zeros((16, 16, 3), np.uint8), options))), np.float32
        )
    settings = _settings(options)
    step = max(1, min(_CHUNK_PATCHES, _CHUNK_PIXELS // (rgb.shape[1] * rgb.shape[2])))
    return np.concatenate(
        [_batch_features(rgb[i : i + step], settings) for i in range(0, len(rgb), step)]
    )


def _batch_features(rgb: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
    """`patch_features` of each patch of a contiguous (n, h, w, 3) uint8 stack. Colour
    conversions act pixel by pixel, so one call on the stack seen as a single tall image gives
    every patch exactly its own conversion."""
    n, h, w, _ = rgb.shape
    tall = rgb.reshape(n * h, w, 3)
    gray = cv2.cvtColor(tall, cv2.COLOR_RGB2GRAY).reshape(n, h, w)
    hsv = cv2.cvtColor(tall, cv2.COLOR_RGB2HSV).reshape(n, h, w, 3)
    g = gray.astype(np.float32) / 255.0
    parts = [_colour_histograms(rgb, hsv, int(settings["colour_bins"]))]
    parts.append(
        _gabor_batch(
            g,
            tuple(float(v) for v in settings["gabor_wavelengths"]),
            int(settings["gabor_orientations"]),
        )
    )
    parts += [_lbp_riu2_batch(gray, int(radius)) for radius in settings["lbp_radii"]]
    parts.append(_orientation_batch(g, int(settings["orientation_bins"])))
    return np.concatenate(parts, axis=1).astype(np.float32)


def _patch_histograms(image: np.ndarray, channel: int, bins: int, top: int) -> np.ndarray:
    """(n, bins) counts of one channel of each patch of an (n, pixels, channels) uint8 stack
    over [0, top): one 2-D cv2.calcHist over (value, patch index), so the bins are exactly
    those of a calcHist per patch; the patch index is a uint8 channel, hence n <= 256."""
    n, pixels = image.shape[:2]
    channels = image.shape[2] if image.ndim == 3 else 1
    patch = np.repeat(np.arange(n, dtype=np.uint8), pixels).reshape(n, pixels)
    hist = cv2.calcHist([image, patch], [channel, channels], None, [bins, n], [0, top, 0, n])
    return hist.T


def _colour_histograms(rgb: np.ndarray, hsv: np.ndarray, bins: int) -> np.ndarray:
    """`baseline.colour_histogram` of every patch: RGB then HSV channel histograms (hue range
    0-180), each normalised by its total."""
    n = len(rgb)
    hists = [
        _patch_histograms(space.reshape(n, -1, 3), channel, bins, top)
        for space, tops in ((rgb, (256, 256, 256)), (hsv, (180, 256, 256)))
        for channel, top in enumerate(tops)
    ]
    return np.concatenate([h / np.maximum(h.sum(axis=1, keepdims=True), 1.0) for h in hists], 1)


# Gabor filtering. cv2.filter2D pads with BORDER_REFLECT_101, which extends a length-m signal to
# an even signal of period 2m - 2; the DFT of that period is real and needs only m cosines. So a
# filtered patch is a few (m x m) matrix products: into this cosine domain once, times each
# kernel's spectrum, back. Stacked over the batch, these products are several times cheaper
# than cv2.filter2D on each padded patch (or on all of them as one tall image).


@lru_cache(maxsize=16)
def _reflect101_basis(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a length-m signal extended by REFLECT_101: the forward cosine transform [k, i] (the
    DFT of one period) and the cosine / sine synthesis matrices [i, k] back to the m samples
    (float32; a 1-sample signal extends to a constant)."""
    period = max(2 * m - 2, 1)
    phase = 2 * np.pi * np.outer(np.arange(m), np.arange(m)) / period  # [k, i]
    once = np.full(m, 2.0)  # inner samples (and frequencies) occur twice per period, ends once
    once[[0, -1]] = 1.0
    forward = np.cos(phase) * once
    cos_synthesis = (np.cos(phase) * once[:, None]).T / period
    sin_synthesis = (np.sin(phase) * once[:, None]).T / period
    return tuple(b.astype(np.float32) for b in (forward, cos_synthesis, sin_synthesis))


def _taps(m: int, size: int, odd: bool) -> np.ndarray:
    """[k, j]: cos (or sin) of frequency k of the period-(2m - 2) DFT at tap offset j of a
    centred kernel of `size` taps; a kernel longer than the period wraps, as REFLECT_101 does."""
    period = max(2 * m - 2, 1)
    phase = 2 * np.pi * np.outer(np.arange(m), np.arange(size) - size // 2) / period
    return np.sin(phase) if odd else np.cos(phase)


def _kernel_terms(kernel: np.ndarray, h: int, w: int) -> list[tuple[np.ndarray, bool, bool]]:
    """cv2.filter2D(x, CV_32F, kernel) of an h x w patch x, REFLECT_101 border, is the sum over
    the kernel's parity parts (even or odd along y, along x) of synthesis_y (X * spectrum)
    synthesis_x^T, X the cosine transform of x, with cosine synthesis along an even axis and
    sine along an odd one. Returns (spectrum [k_y, k_x], odd_y, odd_x) of the non-zero parts:
    one or two for a psi = 0 Gabor kernel, which is symmetric about its centre."""
    if kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise ValueError(f"odd kernel sizes only (centred anchor), got {kernel.shape}")
    k = kernel.astype(np.float64)
    terms = []
    for odd_y in (False, True):
        for odd_x in (False, True):
            sy, sx = (-1 if odd_y else 1), (-1 if odd_x else 1)
            part = (k + sy * k[::-1] + sx * k[:, ::-1] + sy * sx * k[::-1, ::-1]) / 4
            if not part.any():
                continue
            spectrum = _taps(h, k.shape[0], odd_y) @ part @ _taps(w, k.shape[1], odd_x).T
            sign = -1.0 if odd_y != odd_x else 1.0  # i * i from the two sines of the DFT
            terms.append(((sign * spectrum).astype(np.float32), odd_y, odd_x))
    return terms


_MIRROR_L1 = 1e-6  # see `_gabor_bank`


@lru_cache(maxsize=8)
def _gabor_bank(
    wavelengths: tuple[float, ...], orientations: int, h: int, w: int
) -> list[list[tuple[list[tuple[np.ndarray, bool, bool]], bool]]]:
    """Per wavelength, the `_kernel_terms` to filter by, each with whether it also stands for
    its left-right mirror image in the bank. The kernels at theta and pi - theta are mirror
    images up to float32 rounding of their values (L1 distance ~1e-7; each kernel has L1 norm
    1) and mirroring a kernel only flips the sign of its x-odd terms, so one set of products
    gives both responses, off by at most that L1 distance (< `_MIRROR_L1`) as gray / 255 <= 1."""
    bank = []
    for row in _gabor_kernels(wavelengths, orientations):
        entries, covered = [], set()
        for i, kernel in enumerate(row):
            if i in covered:
                continue
            terms = _kernel_terms(kernel, h, w)
            mirror = next(
                (
                    j
                    for j in range(i + 1, len(row))
                    if j not in covered
                    and row[j].shape == kernel.shape
                    and np.abs(row[j] - kernel[:, ::-1]).sum(dtype=np.float64) < _MIRROR_L1
                ),
                None,
            )
            odd_x = [t[2] for t in terms]
            mirrored = mirror is not None and any(odd_x) and not all(odd_x)
            if mirrored:
                covered.add(mirror)
            entries.append((terms, mirrored))
        bank.append(entries)
    return bank


def _cosine_spectrum(stack: np.ndarray) -> np.ndarray:
    """Cosine transform of every patch of an (n, h, w) float32 stack."""
    _, h, w = stack.shape
    forward_y, forward_x = _reflect101_basis(h)[0], _reflect101_basis(w)[0]
    return np.matmul(np.matmul(forward_y, stack), forward_x.T)


class _CosineFilter:
    """cv2.filter2D (REFLECT_101 border) of every patch of an (n, h, w) float32 stack, by any
    number of kernels: the stack's `_cosine_spectrum` once, then per kernel the products of its
    `_kernel_terms`. The products are stacked per patch, not one big product over the stack,
    so that each patch gets the same float32 roundings whatever else is in the batch. Work
    arrays are kept from kernel to kernel: fresh multi-MB arrays for every product cost about
    as much as the products."""

    def __init__(self, stack: np.ndarray) -> None:
        self.spectrum = _cosine_spectrum(stack)
        self._product = np.empty_like(self.spectrum)
        self._across: list[np.ndarray] = []

    def __call__(
        self, terms: list[tuple[np.ndarray, bool, bool]], out: np.ndarray | None = None
    ) -> np.ndarray:
        """The stack filtered by the kernel of `terms`, into `out` if given: each term through
        its x synthesis, then one product with the terms' y syntheses side by side, which also
        sums them."""
        n, h, w = self.spectrum.shape
        synthesis_y, synthesis_x = _reflect101_basis(h)[1:], _reflect101_basis(w)[1:]
        while len(self._across) < len(terms):
            self._across.append(np.empty((n, len(self._across) + 1, h, w), np.float32))
        across = self._across[len(terms) - 1]
        for i, (kernel_spectrum, _, odd_x) in enumerate(terms):
            np.multiply(self.spectrum, kernel_spectrum, out=self._product)
            np.matmul(self._product, synthesis_x[odd_x].T, out=across[:, i])
        down = np.hstack([synthesis_y[odd_y] for _, odd_y, _ in terms])
        return np.matmul(down, across.reshape(n, len(terms) * h, w), out=out)


def _gabor_batch(g: np.ndarray, wavelengths: tuple[float, ...], orientations: int) -> np.ndarray:
    """Per patch and wavelength: mean, spread and range over orientations of the mean absolute
    Gabor response of g (gray / 255, float32, n x h x w), as in `patch_features` (in another
    order of orientations: mirror pairs of `_gabor_bank` come together; the three statistics
    do not depend on it)."""
    n, h, w = g.shape
    filtered = _CosineFilter(g)
    first, second, third = (np.empty((n, h, w), np.float32) for _ in range(3))

    def mean_abs(x: np.ndarray) -> np.ndarray:
        return np.abs(x, out=x).mean(axis=(1, 2))

    out = []
    for row in _gabor_bank(wavelengths, orientations, h, w):
        energies = []
        for terms, mirrored in row:
            if not mirrored:
                energies.append(mean_abs(filtered(terms, first)))
                continue
            even = filtered([t for t in terms if not t[2]], first)
            odd = filtered([t for t in terms if t[2]], second)
            energies.append(mean_abs(np.subtract(even, odd, out=third)))  # the mirror image
            energies.append(mean_abs(np.add(even, odd, out=first)))
        energies = np.stack(energies, axis=1)
        out.append(
            np.stack([energies.mean(1), energies.std(1), energies.max(1) - energies.min(1)], 1)
        )
    return np.concatenate(out, axis=1)


@lru_cache(maxsize=1)
def _riu2_codes() -> np.ndarray:
    """The riu2 code (0-8 brighter neighbours on a uniform ring, 9 = non-uniform) of each of
    the 256 8-bit neighbour patterns, bit k = neighbour k of `_lbp_riu2`."""
    bits = (np.arange(256)[:, None] >> np.arange(8)) & 1
    transitions = (bits != np.roll(bits, 1, axis=1)).sum(axis=1)
    return np.where(transitions <= 2, bits.sum(axis=1), 9).astype(np.uint8)


def _lbp_riu2_batch(gray: np.ndarray, radius: int) -> np.ndarray:
    """`_lbp_riu2` of every patch of an (n, h, w) uint8 stack: the 8 comparisons packed into a
    byte per pixel, a table lookup to the riu2 code, one histogram over (code, patch)."""
    n, h, w = gray.shape
    padded = np.pad(gray, ((0, 0), (radius, radius), (radius, radius)), mode="reflect")
    pattern = np.zeros(gray.shape, np.uint8)
    brighter = np.empty(gray.shape, bool)
    for bit in range(8):
        a = 2 * np.pi * bit / 8
        dy, dx = -round(radius * np.sin(a)), round(radius * np.cos(a))
        neighbour = padded[:, radius + dy : radius + dy + h, radius + dx : radius + dx + w]
        np.greater_equal(neighbour, gray, out=brighter)
        pattern += brighter.view(np.uint8) << np.uint8(bit)
    code = cv2.LUT(pattern.reshape(n, h * w), _riu2_codes())
    hist = _patch_histograms(code, 0, 10, 10)
    return hist / hist.sum(axis=1, keepdims=True)


@lru_cache(maxsize=8)
def _angle_edges(bins: int) -> np.ndarray:
    """The inner bin edges np.histogram(angle, bins, range=(0, np.pi)) compares float32 angles
    with, in its own dtype (float32 under numpy 2: the float64 edges rounded to nearest)."""
    return np.histogram_bin_edges(np.zeros(1, np.float32), bins, range=(0, np.pi))[1:-1]


def _mod_pi(angle: np.ndarray) -> np.ndarray:
    """np.mod(angle, np.pi) of float32 arctan2 output (in [-pi, pi]) without numpy's slow
    generic float remainder; the same float32 result: pi itself becomes 0, negative angles get
    pi added (and the tiniest of them round to pi, as in np.mod)."""
    pi = np.float32(np.pi)
    folded = angle + pi * (angle < 0)
    folded[angle == pi] = 0
    return folded


def _orientation_batch(g: np.ndarray, bins: int) -> np.ndarray:
    """`_orientation` of every patch of an (n, h, w) float32 stack. The patches, each padded
    by one row above and below with np.pad "reflect" (= cv2's default BORDER_REFLECT_101), go
    through cv2.Sobel once as one tall image of the patches' own width: cv2 then computes every
    pixel exactly as it does for the patch alone (padding the columns too would change its
    vector/scalar split and the float32 rounding, which can move gradients with gy ~ 0 between
    the first and the last orientation bin). Binning as np.histogram does: bin i holds
    edges[i] <= angle < edges[i + 1] for its own `_angle_edges`, and nothing is dropped (angles
    reach float32(pi) > pi, which np.histogram keeps: its range check runs in float32)."""
    n, h, w = g.shape
    tall = np.pad(g, ((0, 0), (1, 1), (0, 0)), mode="reflect").reshape(n * (h + 2), w)
    gx, gy = (
        cv2.Sobel(tall, cv2.CV_32F, dx, dy, ksize=3).reshape(n, h + 2, w)[:, 1:-1]
        for dx, dy in ((1, 0), (0, 1))
    )
    magnitude = np.hypot(gx, gy)
    angle = _mod_pi(np.arctan2(gy, gx))
    index = np.zeros(angle.shape, np.uint8)
    for edge in _angle_edges(bins):
        index += angle >= edge
    index = index + (bins * np.arange(n))[:, None, None]
    hist = np.bincount(index.ravel(), weights=magnitude.ravel(), minlength=n * bins)
    hist = hist.reshape(n, bins)
    hist = np.sort(hist, axis=1)[:, ::-1] / np.maximum(hist.sum(axis=1, keepdims=True), 1e-9)
    jxx, jyy, jxy = (
        (a * b).mean(axis=(1, 2), dtype=np.float32).astype(np.float64)
        for a, b in ((gx, gx), (gy, gy), (gx, gy))
    )
    coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / np.maximum(jxx + jyy, 1e-9)
    return np.column_stack([hist, coherence, magnitude.mean(axis=(1, 2))])


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
