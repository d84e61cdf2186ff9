"""A synthetic skin-biopsy simulator: stained sections of normal and SSc skin with masks.

No public SSc image set exists, so this module draws sections whose *structure* changes with a
continuous disease severity (dermal thickening, parallel hyalinised collagen with fewer clefts,
loss of adnexa and fat, perivascular inflammation early, flat rete ridges late), rendered through
a Beer-Lambert stain model so that colour depends on stain, patient and section thickness as in a
real lab. Pure numpy/OpenCV; it knows nothing of Kedro.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from ssc_skin.constants import LABELS, MASK_CLASSES

logger = logging.getLogger(__name__)


# Optical-density vectors (R, G, B) of each stain channel: nuclei, cytoplasm, collagen.
STAIN_VECTORS = {
    "he": np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.10, 0.80, 0.20]]),
    "masson": np.array([[0.55, 0.60, 0.50], [0.05, 0.85, 0.65], [0.85, 0.45, 0.08]]),
}

# Severity range per label; neighbouring ranges overlap so labels are not a clean cut.
SEVERITY_RANGES = {"normal": (0.0, 0.3), "early": (0.25, 0.65), "late": (0.6, 1.0)}


@dataclass(frozen=True)
class Patient:
    """What a patient shares across all their sections."""

    patient_id: str
    label: str
    severity: float
    stain_scale: np.ndarray  # per-stain intensity factor (lab batch, protocol)
    thickness: float  # section thickness: scales every optical density
    dermis_scale: float  # anatomy / biopsy site
    seed: int


@dataclass(frozen=True)
class Section:
    """One generated image with its ground-truth tissue mask."""

    image_id: str
    patient_id: str
    label: str
    severity: float
    image: np.ndarray  # HxWx3 uint8 RGB
    mask: np.ndarray  # HxW uint8, values of MASK_CLASSES


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian-filtered noise: the basis of every texture here.

    Wide blurs are done on a coarser grid and upsampled: the result is just as smooth and
    costs a fraction of a full-resolution blur.
    """
    factor = max(1, int(sigma // 3))
    small = (max(2, -(-shape[0] // factor)), max(2, -(-shape[1] // factor)))
    field = cv2.GaussianBlur(rng.standard_normal(small).astype(np.float32), (0, 0), sigma / factor)
    if factor > 1:
        field = cv2.resize(field, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def _profile(rng: np.random.Generator, width: int, sigma: float) -> np.ndarray:
    """A smooth 1-D random curve (unit variance) for wavy layer boundaries."""
    curve = cv2.GaussianBlur(rng.standard_normal((1, width)).astype(np.float32), (0, 0), sigma)[0]
    return curve / (curve.std() + 1e-6)


def _oriented_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    angle: float,
    sigma_long: float,
    sigma_short: float,
) -> np.ndarray:
    """Noise smeared along one direction: collagen bundles running at `angle` (radians)."""
    size = int(6 * sigma_long) | 1
    g_long = cv2.getGaussianKernel(size, sigma_long)
    g_short = cv2.getGaussianKernel(size, sigma_short)
    kernel = (g_short @ g_long.T).astype(np.float32)  # elongated along x
    rot = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), math.degrees(angle), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (size, size))
    field = cv2.filter2D(rng.standard_normal(shape).astype(np.float32), -1, kernel)
    return (field - field.mean()) / (field.std() + 1e-6)


def _warp(
    rng: np.random.Generator, field: np.ndarray, amplitude: float, sigma: float
) -> np.ndarray:
    """Bend a texture with a smooth displacement: wavy bundles in normal dermis."""
    h, w = field.shape
    if amplitude <= 0:
        return field
    dx = _smooth_noise(rng, (h, w), sigma) * amplitude
    dy = _smooth_noise(rng, (h, w), sigma) * amplitude
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(field, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _collagen(
    rng: np.random.Generator, shape: tuple[int, int], severity: float, difficulty: float
) -> np.ndarray:
    """Collagen density in [0, 1]: interwoven wavy bundles with clefts -> parallel packed sheets."""
    effect = 1.0 - 0.5 * difficulty  # how strongly disease shows in structure
    s = severity * effect
    spread = (1.0 - s) * math.pi / 2  # orientation spread: wide when normal, ~horizontal in SSc
    sigma_short = 1.5 + 2.5 * s
    sigma_long = 7.0 + 14.0 * s
    n_dirs = 4
    fields, weights = [], []
    for _ in range(n_dirs):
        angle = rng.uniform(-spread, spread)
        fields.append(_oriented_noise(rng, shape, angle, sigma_long, sigma_short))
        weights.append(np.exp(2.5 * _smooth_noise(rng, shape, 25)))
    wsum = np.sum(weights, axis=0)
    bundles = np.sum([f * w for f, w in zip(fields, weights, strict=True)], axis=0) / wsum
    bundles = _warp(rng, bundles / (bundles.std() + 1e-6), amplitude=6.0 * (1 - s), sigma=12)
    # Clefts thin out with disease, but vary by site and fixation too (more so when difficult).
    cleft_fraction = float(
        np.clip(0.38 - 0.33 * s + rng.normal(0, 0.04 + 0.08 * difficulty), 0.02, 0.5)
    )
    threshold = np.quantile(bundles, cleft_fraction)
    density = 1.0 / (1.0 + np.exp(-(bundles - threshold) / 0.25))
    fibrils = 0.5 + 0.5 * np.clip(_smooth_noise(rng, shape, 1.0) * 0.3 + bundles * 0.3, -1, 1)
    homogeneous = 0.35 + 0.45 * s  # hyalinised collagen loses its fibrillar texture
    collagen = density * ((1 - homogeneous) * fibrils + homogeneous * 0.8)
    # Hyalinised collagen is packed but pale: the stain taken up per area stays about the same,
    # so disease shows in how collagen is arranged, not in how much eosin the dermis holds.
    return np.clip(collagen * (0.5 / (collagen.mean() + 1e-6)), 0, 1)


def _fat(rng: np.random.Generator, shape: tuple[int, int], cell_radius: float) -> np.ndarray:
    """Adipocyte membranes (1 on the thin septa between empty cells, 0 inside)."""
    h, w = shape
    n = max(4, int(h * w / (math.pi * cell_radius**2)))
    seeds = np.full((h, w), 255, np.uint8)
    seeds[rng.integers(0, h, n), rng.integers(0, w, n)] = 0
    _, labels = cv2.distanceTransformWithLabels(
        seeds, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    edges = np.zeros(shape, np.float32)
    edges[:-1] += labels[:-1] != labels[1:]
    edges[:, :-1] += labels[:, :-1] != labels[:, 1:]
    return cv2.GaussianBlur(np.clip(edges, 0, 1), (0, 0), 0.7) * 1.6


def _stamp_nuclei(
    canvas: np.ndarray,
    rng: np.random.Generator,
    centers: np.ndarray,
    axes: tuple[float, float],
    angle_deg: float | np.ndarray,
    value: float,
) -> None:
    """Draw filled ellipses (nuclei) into a stain channel, in place."""
    angles = np.broadcast_to(np.asarray(angle_deg, dtype=float), (len(centers),))
    for (y, x), ang in zip(centers, angles, strict=True):
        a = max(1, int(round(axes[0] * rng.uniform(0.7, 1.3))))
        b = max(1, int(round(axes[1] * rng.uniform(0.7, 1.3))))
        cv2.ellipse(canvas, (int(x), int(y)), (a, b), float(ang), 0, 360, value, -1)


def _points_in(rng: np.random.Generator, region: np.ndarray, count: int) -> np.ndarray:
    ys, xs = np.nonzero(region)
    if len(ys) == 0 or count <= 0:
        return np.zeros((0, 2), int)
    idx = rng.integers(0, len(ys), count)
    return np.stack([ys[idx], xs[idx]], axis=1)


def make_patient(
    patient_id: str, label: str, rng: np.random.Generator, difficulty: float = 0.5
) -> Patient:
    """Draw a patient's severity (overlapping by label) and their lab/anatomy effects."""
    low, high = SEVERITY_RANGES[label]
    severity = float(np.clip(rng.uniform(low, high), 0, 1))
    stain_var = 0.12 + 0.25 * difficulty
    return Patient(
        patient_id=patient_id,
        label=label,
        severity=severity,
        stain_scale=np.exp(rng.normal(0, stain_var, 3)),
        thickness=float(np.exp(rng.normal(0, 0.1 + 0.2 * difficulty))),
        dermis_scale=float(np.exp(rng.normal(0, 0.1 + 0.15 * difficulty))),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def render_section(  # noqa: PLR0915 - one drawing recipe, read top to bottom
    patient: Patient,
    index: int,
    size: tuple[int, int] = (512, 512),
    stain: str = "he",
    difficulty: float = 0.5,
    artefact_rate: float | dict[str, float] = 0.2,
) -> Section:
    """Draw one section of `patient`: layers, collagen, cells, adnexa, vessels, fat, artefacts."""
    if stain not in STAIN_VECTORS:
        raise ValueError(f"stain must be one of {sorted(STAIN_VECTORS)}, got {stain!r}")
    rng = np.random.default_rng([patient.seed, index])
    h, w = size
    sev = float(np.clip(patient.severity + rng.normal(0, 0.05), 0, 1))
    effect = 1.0 - 0.5 * difficulty
    s = sev * effect
    rows = np.arange(h, dtype=np.float32)[:, None]

    # Layer boundaries (rows, per column).
    # Where the field of view sits in the section varies per image (how much glass, epidermis
    # and fat it shows), and so does section obliquity (apparent dermal thickness).
    surface = h * rng.uniform(0.02, 0.22) + 4 * _profile(rng, w, 40)
    obliquity = float(np.exp(rng.normal(0, 0.1 + 0.25 * difficulty)))
    ridge_period = rng.uniform(35, 60) * w / 512
    ridge_amp = h * 0.045 * (1 - 0.9 * s)  # rete ridges flatten in late disease
    phase = rng.uniform(0, 2 * math.pi)
    ridges = np.maximum(0, np.sin(2 * math.pi * np.arange(w) / ridge_period + phase)) ** 2
    epi_thick = h * 0.05 * (1 - 0.35 * s)  # atrophic epidermis late
    keratin_bottom = surface + h * 0.015
    epi_bottom = keratin_bottom + epi_thick + ridge_amp * ridges
    papillary_bottom = epi_bottom + h * 0.04
    dermis_depth = h * 0.34 * patient.dermis_scale * obliquity * (1 + 1.6 * s)
    # the dermis-fat border undulates on its own, it does not copy the rete ridges
    dermis_bottom = (
        keratin_bottom + epi_thick + h * 0.04 + dermis_depth + h * 0.03 * _profile(rng, w, 60)
    )

    in_tissue = rows >= surface
    keratin = in_tissue & (rows < keratin_bottom)
    epidermis = (rows >= keratin_bottom) & (rows < epi_bottom)
    papillary = (rows >= epi_bottom) & (rows < papillary_bottom)
    reticular = (rows >= papillary_bottom) & (rows < dermis_bottom)
    fat_zone = rows >= dermis_bottom

    nuclei = np.zeros((h, w), np.float32)
    cytoplasm = np.zeros((h, w), np.float32)
    collagen = np.zeros((h, w), np.float32)

    # Keratin: wavy basket-weave lamellae.
    lamellae = 0.5 + 0.5 * np.sin(rows * 1.3 + 2 * _smooth_noise(rng, (h, w), 4))
    cytoplasm += keratin * (0.35 + 0.35 * lamellae)

    # Epidermis: keratinocytes (pink cytoplasm) with nuclei, densest at the basal layer.
    cytoplasm += epidermis * (0.55 + 0.1 * _smooth_noise(rng, (h, w), 2))
    n_epi = int(epidermis.sum() / 55)
    _stamp_nuclei(
        nuclei, rng, _points_in(rng, epidermis, n_epi), (2.6, 2.0), rng.uniform(0, 180, n_epi), 1.0
    )

    # Dermis: fine loose papillary collagen, then bundles.
    papillary_collagen = np.clip(0.45 + 0.25 * _smooth_noise(rng, (h, w), 1.2), 0, 1)
    papillary_collagen = papillary_collagen * (1 - s) + 0.8 * s  # sclerosis reaches up
    collagen += papillary * papillary_collagen
    collagen += reticular * _collagen(rng, (h, w), sev, difficulty)

    # Subcutaneous fat, with collagen septa that thicken and replace lobules in SSc.
    cell_r = rng.uniform(14, 22) * w / 512
    fat_membrane = _fat(rng, (h, w), cell_r)
    replaced = (_smooth_noise(rng, (h, w), 20) < -1.2 + 2.4 * s * 0.6) & fat_zone
    cytoplasm += fat_zone * fat_membrane * 0.35
    collagen += replaced * _collagen(rng, (h, w), min(1.0, sev + 0.2), difficulty)
    fat_mask = fat_zone & ~replaced

    dermis = papillary | reticular | replaced

    # Fibroblasts: elongated, sparse in late disease.
    fib_density = (1 / 260) * (1.0 - 0.7 * s) + (1 / 900)
    n_fib = int(dermis.sum() * fib_density)
    spread = (1 - s) * 90
    _stamp_nuclei(
        nuclei,
        rng,
        _points_in(rng, dermis, n_fib),
        (3.5, 1.2),
        rng.uniform(-spread, spread, n_fib),
        0.9,
    )

    # Vessels: lumens with walls that thicken with disease; perivascular infiltrates early.
    inflammation = math.exp(-(((sev - 0.45) / 0.18) ** 2)) * effect
    n_vessels = rng.poisson(8 * w / 512) + 2
    for cy, cx in _points_in(rng, dermis, n_vessels):
        r = int(rng.uniform(3, 8))
        wall = int(2 + 4 * s)
        cv2.circle(cytoplasm, (int(cx), int(cy)), r + wall, 0.9, -1)
        cv2.circle(collagen, (int(cx), int(cy)), r + wall, 0.0, -1)
        cv2.circle(cytoplasm, (int(cx), int(cy)), r, 0.0, -1)
        t = rng.uniform(0, 2 * math.pi, 4)
        ring = np.stack([cy + (r + 1) * np.sin(t), cx + (r + 1) * np.cos(t)], 1)
        _stamp_nuclei(nuclei, rng, ring, (2.5, 1.2), 0, 1.0)
        n_lymph = rng.poisson(60 * inflammation)
        if n_lymph:
            offs = rng.normal(0, r + 8, (n_lymph, 2))
            _stamp_nuclei(nuclei, rng, np.array([cy, cx]) + offs, (1.8, 1.8), 0, 1.2)

    # Adnexa: follicles and eccrine coils wrapped in fat; they atrophy and vanish with disease.
    adnexa_fat = np.zeros((h, w), np.uint8)
    n_follicles = rng.poisson(1.6 * (1 - s) ** 2 * w / 512)
    for _ in range(n_follicles):
        x0 = rng.uniform(0.1, 0.9) * w
        y0 = float(epi_bottom[int(x0)])
        length = rng.uniform(0.3, 0.6) * dermis_depth
        ang = rng.uniform(-0.5, 0.5)
        x1, y1 = x0 + length * math.sin(ang), y0 + length * math.cos(ang)
        thick = int(rng.uniform(6, 11))
        cv2.line(adnexa_fat, (int(x0), int(y0)), (int(x1), int(y1)), 1, thick * 2 + 10)
        sheath = np.zeros((h, w), np.uint8)
        cv2.line(sheath, (int(x0), int(y0)), (int(x1), int(y1)), 1, thick * 2)
        cytoplasm += sheath * 0.6
        collagen *= 1 - sheath
        n = int(sheath.sum() / 30)
        _stamp_nuclei(nuclei, rng, _points_in(rng, sheath > 0, n), (2.4, 2.0), 0, 1.0)
        # hair shaft: a keratinised core line; bulb: a knot of matrix cells at the deep end
        cv2.line(cytoplasm, (int(x0), int(y0)), (int(x1), int(y1)), 1.1, max(2, thick // 3))
        cv2.circle(cytoplasm, (int(x1), int(y1)), thick + 2, 0.7, -1)
        cv2.circle(collagen, (int(x1), int(y1)), thick + 2, 0.0, -1)
        bulb = np.zeros((h, w), np.uint8)
        cv2.circle(bulb, (int(x1), int(y1)), thick + 2, 1, -1)
        _stamp_nuclei(
            nuclei, rng, _points_in(rng, bulb > 0, int(bulb.sum() / 18)), (2.0, 2.0), 0, 1.1
        )
        # sebaceous gland: pale foamy lobule with small central nuclei beside the upper third
        side = 1 if rng.random() < 0.5 else -1
        gx = int(x0 + (x1 - x0) * 0.3 + side * (thick + 12))
        gy = int(y0 + (y1 - y0) * 0.3)
        gland = np.zeros((h, w), np.uint8)
        cv2.ellipse(gland, (gx, gy), (13, 9), float(np.degrees(ang)), 0, 360, 1, -1)
        foam = 0.18 + 0.2 * _fat(rng, (h, w), 3.5) * 0.5
        cytoplasm[gland > 0] = foam[gland > 0]
        collagen[gland > 0] = 0
        adnexa_fat[gland > 0] = 0
        _stamp_nuclei(nuclei, rng, _points_in(rng, gland > 0, 6), (1.6, 1.6), 0, 1.0)
    n_coils = rng.poisson((2.5 * (1 - s) + 0.4) * w / 512)
    deep = dermis & (rows > dermis_bottom[None, :] - 0.25 * dermis_depth)
    for cy, cx in _points_in(rng, deep, n_coils):
        if s < 0.45:  # normal coils sit in a cushion of fat; in SSc they are trapped in collagen
            cv2.circle(adnexa_fat, (int(cx), int(cy)), int(22 * (1 - s)), 1, -1)
        for ty, tx in rng.normal(0, 7, (int(rng.integers(4, 9)), 2)) + [cy, cx]:
            tube = np.zeros((h, w), np.uint8)
            cv2.circle(tube, (int(tx), int(ty)), 5, 1, 3)
            cytoplasm += tube * 0.7
            collagen *= 1 - tube
            _stamp_nuclei(nuclei, rng, _points_in(rng, tube > 0, 5), (1.8, 1.8), 0, 1.0)
    adnexa_fat_mask = (adnexa_fat > 0) & dermis & (cytoplasm < 0.3)
    collagen[adnexa_fat_mask] = 0
    cytoplasm[adnexa_fat_mask] += fat_membrane[adnexa_fat_mask] * 0.35
    fat_mask = fat_mask | adnexa_fat_mask
    dermis = dermis & ~adnexa_fat_mask

    # Scattered nuclei in fat septa.
    _stamp_nuclei(
        nuclei,
        rng,
        _points_in(rng, fat_mask & (fat_membrane > 0.5), int(fat_mask.sum() / 2500)),
        (2.5, 1.2),
        0,
        0.9,
    )

    nuclei = cv2.GaussianBlur(nuclei, (0, 0), 0.8) * in_tissue
    cytoplasm = cytoplasm * in_tissue
    collagen = collagen * in_tissue * 0.75

    image = _stain(np.stack([nuclei, cytoplasm, collagen], -1), patient, stain, rng)
    image = _artefacts(image, rng, artefact_rate)

    mask = np.zeros((h, w), np.uint8)
    mask[np.broadcast_to(keratin | epidermis, (h, w))] = MASK_CLASSES["epidermis"]
    mask[dermis] = MASK_CLASSES["dermis"]
    mask[fat_mask] = MASK_CLASSES["fat"]
    return Section(
        image_id=f"{patient.patient_id}_s{index:02d}",
        patient_id=patient.patient_id,
        label=patient.label,
        severity=sev,
        image=image,
        mask=mask,
    )


def _stain(
    concentrations: np.ndarray, patient: Patient, stain: str, rng: np.random.Generator
) -> np.ndarray:
    """Beer-Lambert rendering: per-stain concentrations -> RGB, with the patient's stain batch."""
    vectors = STAIN_VECTORS[stain] * patient.stain_scale[:, None]
    vectors = vectors * np.exp(rng.normal(0, 0.03, vectors.shape))  # slide-to-slide jitter
    od = concentrations @ vectors * patient.thickness + 0.03  # glass absorbs a little
    od += rng.normal(0, 0.015, od.shape[:2])[..., None]
    return np.clip(255 * np.exp(-od), 0, 255).astype(np.uint8)


ARTEFACTS = ("fold", "tear", "bubble", "illumination", "blur", "noise", "jpeg")


def artefact_rates(rate: float | dict[str, float]) -> dict[str, float]:
    """One rate for every artefact, or a rate per artefact name (missing names: 0)."""
    if isinstance(rate, dict):
        unknown = set(rate) - set(ARTEFACTS)
        if unknown:
            raise ValueError(
                f"artefact_rate has unknown artefacts {sorted(unknown)}; allowed: {list(ARTEFACTS)}"
            )
        return {name: float(rate.get(name, 0.0)) for name in ARTEFACTS}
    return dict.fromkeys(ARTEFACTS, float(rate))


def _artefacts(
    image: np.ndarray, rng: np.random.Generator, rate: float | dict[str, float]
) -> np.ndarray:
    """Folds, tears, bubbles, uneven illumination, blur, noise and JPEG, each at its rate."""
    rates = artefact_rates(rate)
    h, w = image.shape[:2]
    img = image.astype(np.float32)
    if rng.random() < rates["fold"]:  # fold: a band where tissue overlaps itself (doubled density)
        band = np.zeros((h, w), np.float32)
        y = rng.uniform(0.3, 0.9) * h
        cv2.line(
            band,
            (0, int(y)),
            (w, int(y + rng.uniform(-0.2, 0.2) * h)),
            1.0,
            int(rng.uniform(4, 12)),
        )
        img = img * (1 - 0.35 * cv2.GaussianBlur(band, (0, 0), 2)[..., None])
    if rng.random() < rates["tear"]:  # tear: a white crack
        tear = np.zeros((h, w), np.float32)
        pts = np.cumsum(rng.normal(0, 6, (12, 2)), 0) + [rng.uniform(0, w), rng.uniform(0.2, 1) * h]
        cv2.polylines(tear, [pts.astype(np.int32)], False, 1.0, int(rng.uniform(2, 5)))
        img = img * (1 - tear[..., None]) + 245 * tear[..., None]
    if rng.random() < rates["bubble"]:  # air bubble: a clear disc with a dark rim
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        r = int(rng.uniform(0.04, 0.1) * w)
        disc = np.zeros((h, w), np.float32)
        cv2.circle(disc, centre, r, 1.0, -1)
        rim = np.zeros((h, w), np.float32)
        cv2.circle(rim, centre, r, 1.0, 2)
        img = img * (1 - 0.5 * disc[..., None]) + 0.5 * disc[..., None] * 240
        img *= 1 - 0.5 * rim[..., None]
    if rng.random() < rates["illumination"]:  # uneven illumination
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        gx, gy = rng.normal(0, 0.15, 2)
        img *= (1 + gx * (xx / w - 0.5) + gy * (yy / h - 0.5))[..., None]
    if rng.random() < rates["blur"]:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.8, 2.0))
    if rng.random() < rates["noise"]:
        img += rng.normal(0, rng.uniform(3, 8), img.shape)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < rates["jpeg"]:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.uniform(35, 75))])
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if ok else out
    return out


def generate_cohort(
    patients_per_class: dict[str, int],
    images_per_patient: int,
    size: tuple[int, int] = (512, 512),
    stain: str = "he",
    difficulty: float = 0.5,
    artefact_rate: float | dict[str, float] = 0.2,
    seed: int = 0,
    workers: int = 1,
) -> Iterator[Section]:
    """Yield sections for a whole cohort; deterministic for a seed, lazy to keep memory flat.

    `workers` > 1 draws that many sections at once in threads (NumPy and OpenCV release the
    GIL: 1.8x on 2 cores). Each section's drawing depends only on its patient's seed and its
    index, so the sections and their order are the same for any `workers`; at most
    2 x `workers` sections are held ahead of the consumer.
    """
    unknown = set(patients_per_class) - set(LABELS)
    if unknown:
        raise ValueError(
            f"patients_per_class has unknown labels {sorted(unknown)}; allowed: {list(LABELS)}"
        )
    artefact_rates(artefact_rate)  # fail on a wrong name before drawing anything
    jobs = _section_jobs(patients_per_class, images_per_patient, seed, difficulty)

    def draw(job: tuple[Patient, int]) -> Section:
        return render_section(job[0], job[1], size, stain, difficulty, artefact_rate)

    if workers <= 1:
        yield from map(draw, jobs)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="synthetic") as pool:
        pending: deque[Future[Section]] = deque()
        for job in jobs:
            pending.append(pool.submit(draw, job))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _section_jobs(
    patients_per_class: dict[str, int], images_per_patient: int, seed: int, difficulty: float
) -> Iterator[tuple[Patient, int]]:
    """(patient, image index) in cohort order; patients drawn from one seeded stream."""
    rng = np.random.default_rng(seed)
    number = 0
    for label in LABELS:
        for _ in range(patients_per_class.get(label, 0)):
            number += 1
            patient = make_patient(f"P{number:04d}", label, rng, difficulty)
            for index in range(images_per_patient):
                yield patient, index
