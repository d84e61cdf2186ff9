"""Results on the slide: a probability heatmap over the thumbnail and a QuPath GeoJSON.

A pathologist checks a slide-level call by looking at where on the slide it came from, so
each slide gets:

- `probability_heatmap`: the thumbnail with each tile tinted by the probability of one class
  (RGB uint8; the catalog writes it as PNG), glass and untiled tissue left as they are;
- `qupath_geojson`: a GeoJSON FeatureCollection that QuPath's *File > Import objects* reads:
  the tissue outline as an `annotation` (polygons from the thumbnail mask, holes kept) and
  every tile as a `detection` whose `classification` is its most probable class and whose
  `measurements` hold `probability_<class>` per class and the tile's tissue fraction.
  Coordinates are level-0 pixels, QuPath's own image coordinates.

Inputs are plain arrays and a tile table (level-0 `x`, `y`, `size` and one
`probability_<class>` column per class), so this knows nothing of Kedro or of OpenSlide.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import pandas as pd

# QuPath's colours are RGB integer triples; these read on H&E and on the heatmap.
DEFAULT_COLOURS = {
    "normal": (46, 160, 67),
    "ssc": (214, 39, 40),
    "early": (255, 127, 14),
    "late": (148, 20, 120),
    "tissue": (60, 90, 200),
}
NOT_SCORED, NOT_SCORED_COLOUR = "Not scored", (160, 160, 160)
OBJECT_TYPES = ("annotation", "detection", "tile", "cell")
_NAMESPACE = uuid.UUID("6f1c1c2e-5d0b-4a43-9a57-6b7f0f8f5b11")  # stable ids per slide/tile


def probability_column(name: str) -> str:
    return f"probability_{name}"


def colour_for(name: str, index: int = 0) -> tuple[int, int, int]:
    """A fixed colour per class name (a palette colour for names we do not know)."""
    if name in DEFAULT_COLOURS:
        return DEFAULT_COLOURS[name]
    palette = [(31, 119, 180), (255, 187, 120), (140, 86, 75), (227, 119, 194), (127, 127, 127)]
    return palette[index % len(palette)]


def _check_tiles(tiles: pd.DataFrame, classes: Sequence[str]) -> None:
    needed = ["x", "y", "size", *(probability_column(c) for c in classes)]
    missing = [column for column in needed if column not in tiles.columns]
    if missing:
        raise ValueError(
            f"tile table lacks column(s) {', '.join(missing)}; needs level-0 x, y, "
            "size and probability_<class> per class"
        )


# --- heatmap -----------------------------------------------------------------------------------


def colour_map(values: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] to RGB uint8: blue (0) through white (0.5) to red (1).

    A diverging map puts 0.5, where the model cannot tell, at the neutral colour.
    """
    v = np.clip(np.asarray(values, np.float32), 0, 1)[..., None]
    blue, white, red = (
        np.array(c, np.float32) for c in ((33, 102, 172), (247, 247, 247), (178, 24, 43))
    )
    low = white + (blue - white) * (1 - 2 * v)
    high = white + (red - white) * (2 * v - 1)
    return np.where(v < 0.5, low, high).round().astype(np.uint8)


def probability_heatmap(
    thumbnail: np.ndarray,
    downsample: float,
    tiles: pd.DataFrame,
    class_name: str,
    alpha: float = 0.55,
) -> np.ndarray:
    """The thumbnail with each tile tinted by P(`class_name`) (RGB uint8, thumbnail size).

    `downsample` is level-0 pixels per thumbnail pixel. Tiles overlapping (stride < size) are
    averaged where they overlap; pixels under no tile keep the thumbnail's colour.
    """
    if thumbnail.ndim != 3 or thumbnail.shape[2] != 3 or thumbnail.dtype != np.uint8:
        raise ValueError(f"thumbnail must be HxWx3 uint8; got {thumbnail.shape} {thumbnail.dtype}")
    if downsample <= 0 or not 0 <= alpha <= 1:
        raise ValueError(f"need downsample > 0 and 0 <= alpha <= 1; got {downsample}, {alpha}")
    _check_tiles(tiles, [class_name])
    height, width = thumbnail.shape[:2]
    total = np.zeros((height, width), np.float32)
    count = np.zeros((height, width), np.float32)
    x0 = np.floor(tiles["x"].to_numpy() / downsample).astype(int)
    y0 = np.floor(tiles["y"].to_numpy() / downsample).astype(int)
    x1 = np.ceil((tiles["x"] + tiles["size"]).to_numpy() / downsample).astype(int)
    y1 = np.ceil((tiles["y"] + tiles["size"]).to_numpy() / downsample).astype(int)
    values = tiles[probability_column(class_name)].to_numpy(np.float32)
    for a, b, c, d, value in zip(x0, y0, x1, y1, values, strict=True):
        total[max(b, 0) : min(d, height), max(a, 0) : min(c, width)] += value
        count[max(b, 0) : min(d, height), max(a, 0) : min(c, width)] += 1
    covered = count > 0
    mean = np.divide(total, count, out=np.zeros_like(total), where=covered)
    tint = colour_map(mean)
    blended = (thumbnail * (1 - alpha) + tint * alpha).round().astype(np.uint8)
    out = thumbnail.copy()
    out[covered] = blended[covered]
    return out


# --- GeoJSON -----------------------------------------------------------------------------------


def tissue_polygons(
    mask: np.ndarray, downsample: float, min_area: float = 4.0, epsilon: float = 0.75
) -> list[list[list[list[float]]]]:
    """The mask's regions as GeoJSON polygon coordinates in level-0 pixels (holes kept).

    `min_area` (thumbnail pixels) drops specks; `epsilon` simplifies outlines by at most
    that many thumbnail pixels. Each ring is closed (first point repeated at the end).
    """
    contours, hierarchy = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
    )
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]
    polygons: list[list[list[list[float]]]] = []
    for index, contour in enumerate(contours):
        if hierarchy[index][3] != -1 or cv2.contourArea(contour) < min_area:
            continue  # a hole (handled with its outer ring) or a speck
        rings = [_ring(contour, downsample, epsilon)]
        child = hierarchy[index][2]
        while child != -1:
            if cv2.contourArea(contours[child]) >= min_area:
                rings.append(_ring(contours[child], downsample, epsilon))
            child = hierarchy[child][0]
        rings = [ring for ring in rings if len(ring) >= 4]
        if rings and len(rings[0]) >= 4:
            polygons.append(rings)
    return polygons


def _ring(contour: np.ndarray, downsample: float, epsilon: float) -> list[list[float]]:
    """A closed ring in level-0 pixels; pixel-edge coordinates, so a 1-px region has area."""
    simplified = cv2.approxPolyDP(contour, epsilon, True) if epsilon > 0 else contour
    points = simplified.reshape(-1, 2).astype(np.float64)
    points = (points + 0.5) * downsample
    ring = [[round(float(x), 1), round(float(y), 1)] for x, y in points]
    if ring and ring[0] != ring[-1]:
        ring.append(ring[0])
    return ring


def _feature(geometry: dict[str, Any], properties: dict[str, Any], key: str) -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": str(uuid.uuid5(_NAMESPACE, key)),
        "geometry": geometry,
        "properties": properties,
    }


def qupath_geojson(
    tiles: pd.DataFrame,
    classes: Sequence[str],
    mask: np.ndarray | None = None,
    downsample: float = 1.0,
    *,
    slide_name: str = "slide",
    colours: Mapping[str, tuple[int, int, int]] | None = None,
    extra_measurements: Sequence[str] = ("tissue_fraction",),
) -> dict[str, Any]:
    """A FeatureCollection for QuPath: the tissue outline (annotation) + one detection per tile.

    `slide_name` only seeds the feature ids (keep it free of patient ids: it is not written
    anywhere else). A tile with a NaN probability (not scored, e.g. gated out as not dermis)
    is classified `Not scored` and has no probability measurements, rather than made-up ones.
    """
    _check_tiles(tiles, classes)
    if not classes:
        raise ValueError("need at least one class name")
    colours = {**{name: colour_for(name, i) for i, name in enumerate(classes)}, **(colours or {})}
    features: list[dict[str, Any]] = []
    if mask is not None:
        polygons = tissue_polygons(mask, downsample)
        if polygons:
            geometry = (
                {"type": "Polygon", "coordinates": polygons[0]}
                if len(polygons) == 1
                else {"type": "MultiPolygon", "coordinates": polygons}
            )
            features.append(
                _feature(
                    geometry,
                    {
                        "objectType": "annotation",
                        "name": "Tissue",
                        "classification": {
                            "name": "Tissue",
                            "color": list(DEFAULT_COLOURS["tissue"]),
                        },
                        "isLocked": True,
                        "measurements": {},
                    },
                    f"{slide_name}/tissue",
                )
            )
    probabilities = tiles[[probability_column(c) for c in classes]].to_numpy(np.float64)
    extras = [column for column in extra_measurements if column in tiles.columns]
    extra_values = tiles[extras].to_numpy(np.float64) if extras else None
    for row, (x, y, size) in enumerate(tiles[["x", "y", "size"]].to_numpy(np.float64)):
        p = probabilities[row]
        measurements = (
            {}
            if np.isnan(p).any()
            else {
                probability_column(c): round(float(v), 6) for c, v in zip(classes, p, strict=True)
            }
        )
        if extra_values is not None:
            measurements.update(
                {
                    name: round(float(v), 6)
                    for name, v in zip(extras, extra_values[row], strict=True)
                    if np.isfinite(v)
                }
            )
        best = NOT_SCORED if np.isnan(p).any() else classes[int(np.argmax(p))]
        properties: dict[str, Any] = {
            "objectType": "detection",
            "measurements": measurements,
            "classification": {"name": best, "color": list(colours.get(best, NOT_SCORED_COLOUR))},
        }
        ring = [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]
        features.append(
            _feature(
                {"type": "Polygon", "coordinates": [ring]},
                properties,
                f"{slide_name}/{x:.0f}/{y:.0f}/{size:.0f}",
            )
        )
    return {"type": "FeatureCollection", "features": features}


# The shape QuPath's GeoJSON import expects (objects exported by QuPath 0.3-0.5 look alike).
QUPATH_GEOJSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["type", "features"],
    "properties": {
        "type": {"const": "FeatureCollection"},
        "features": {"type": "array", "items": {"$ref": "#/$defs/feature"}},
    },
    "$defs": {
        "position": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "number"}},
        "ring": {"type": "array", "minItems": 4, "items": {"$ref": "#/$defs/position"}},
        "polygon": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/ring"}},
        "geometry": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["type", "coordinates"],
                    "properties": {
                        "type": {"const": "Polygon"},
                        "coordinates": {"$ref": "#/$defs/polygon"},
                    },
                },
                {
                    "type": "object",
                    "required": ["type", "coordinates"],
                    "properties": {
                        "type": {"const": "MultiPolygon"},
                        "coordinates": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"$ref": "#/$defs/polygon"},
                        },
                    },
                },
            ]
        },
        "classification": {
            "type": "object",
            "required": ["name", "color"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "color": {
                    "type": "array",
                    "minItems": 3,
                    "maxItems": 3,
                    "items": {"type": "integer", "minimum": 0, "maximum": 255},
                },
            },
        },
        "feature": {
            "type": "object",
            "required": ["type", "geometry", "properties"],
            "properties": {
                "type": {"const": "Feature"},
                "id": {"type": "string"},
                "geometry": {"$ref": "#/$defs/geometry"},
                "properties": {
                    "type": "object",
                    "required": ["objectType", "classification", "measurements"],
                    "properties": {
                        "objectType": {"enum": list(OBJECT_TYPES)},
                        "classification": {"$ref": "#/$defs/classification"},
                        "measurements": {
                            "type": "object",
                            "additionalProperties": {"type": "number"},
                        },
                    },
                },
            },
        },
    },
}
