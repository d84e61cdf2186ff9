"""Results on the slide, and the files one predict run writes.

A pathologist checks a slide-level call by looking at where on the slide it came from, so
each slide gets, per task:

- `probability_heatmap`: the thumbnail with each tile tinted by the probability of one class
  (RGB uint8), glass and untiled tissue left as they are; `heatmap_figure` adds the task
  name, the slide's call, a colour legend and a scale bar (written as PNG);
- `qupath_geojson`: a GeoJSON FeatureCollection that QuPath's *File > Import objects* reads:
  the tissue outline as an `annotation` (polygons from the thumbnail mask, holes kept; the
  slide-level probabilities of every task as its measurements) and every candidate tile as a
  `detection` whose `classification` is its most probable class and whose `measurements`
  hold `probability_<class>` per class, its tissue and dermis fraction; a tile that UNet
  gating removed is `Not scored` with its dermis fraction. Coordinates are level-0 pixels,
  QuPath's own image coordinates.

Output formats are one mapping, `OUTPUT_FORMATS` (name -> function from a `SlideResult` to
its files as bytes): adding a format is one function and one entry; `run_files` lays out
one predict run's folder (`<run_id>/...` plus `latest.json`), which the catalog writes as
a partitioned dataset without ever deleting an earlier run.

Inputs are plain arrays and tile tables, so this knows nothing of Kedro or of OpenSlide.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import cv2
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure

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
    extra_measurements: Sequence[str] = ("tissue_fraction", "dermis_fraction"),
    tissue_measurements: Mapping[str, float] | None = None,
    tissue_name: str = "Tissue",
) -> dict[str, Any]:
    """A FeatureCollection for QuPath: the tissue outline (annotation) + one detection per tile.

    `slide_name` only seeds the feature ids (keep it free of patient ids: it is not written
    anywhere else). A tile with a NaN probability (not scored, e.g. gated out as not dermis)
    is classified `Not scored` and has no probability measurements, rather than made-up ones;
    its tissue and dermis fractions are kept. `tissue_measurements` (e.g. the slide-level
    probabilities) go on the tissue annotation, named `tissue_name`.
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
                        "name": tissue_name,
                        "classification": {
                            "name": "Tissue",
                            "color": list(DEFAULT_COLOURS["tissue"]),
                        },
                        "isLocked": True,
                        "measurements": {
                            name: round(float(v), 6)
                            for name, v in (tissue_measurements or {}).items()
                            if v is not None and np.isfinite(v)
                        },
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


# --- one slide's result, and the output formats --------------------------------------------------


def task_column(task: str, class_name: str) -> str:
    """A tile table's probability column of one task's class (every task in one table)."""
    return f"{task}.{probability_column(class_name)}"


@dataclass
class SlideResult:
    """What predict found on one slide, in plain values: all any output format needs.

    `tiles` holds every candidate tile (level-0 `x`, `y`, `size`, `tissue_fraction`,
    `dermis_fraction`, `scored`) and `task_column(task, class)` probabilities, NaN where the
    tile was not scored (gated out). `calls` is each task's slide row (label, probabilities,
    patch count, selection), as in the predictions table.
    """

    name: str  # the slide's pseudonym
    tiles: pd.DataFrame
    thumbnail: np.ndarray
    mask: np.ndarray
    downsample: float  # level-0 pixels per thumbnail pixel
    microns_per_pixel: float  # level 0
    tasks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)

    def task_tiles(self, task: str) -> pd.DataFrame:
        """The tile table of one task, its columns named `probability_<class>`."""
        columns = {task_column(task, c): probability_column(c) for c in self.tasks[task]}
        keep = [c for c in self.tiles.columns if "." not in c]
        return self.tiles[[*keep, *columns]].rename(columns=columns)

    def shown_class(self, task: str) -> str:
        """The class a heatmap shows: `ssc` where the task has it, else its last class."""
        classes = self.tasks[task]
        return "ssc" if "ssc" in classes else classes[-1]

    def slide_measurements(self) -> dict[str, float]:
        """Slide-level probabilities of every task, as QuPath measurements."""
        return {
            f"{task}: P({c})": float(row[probability_column(c)])
            for task, row in self.calls.items()
            for c in self.tasks[task]
            if row.get(probability_column(c)) is not None
        }

    def call_text(self, task: str) -> str:
        row = self.calls.get(task, {})
        shown = self.shown_class(task)
        p = row.get(probability_column(shown))
        return f"{task}: {row.get('label', '?')}" + (
            f" (P({shown})={p:.2f})" if p is not None and np.isfinite(p) else ""
        )


_SCALE_BARS_UM = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)


def scale_bar_microns(width_um: float) -> int:
    """A round scale-bar length near a fifth of the image width."""
    fitting = [length for length in _SCALE_BARS_UM if length <= width_um / 5]
    return fitting[-1] if fitting else _SCALE_BARS_UM[0]


def _length_text(microns: int) -> str:
    return f"{microns // 1000} mm" if microns >= 1000 and microns % 1000 == 0 else f"{microns} µm"


def heatmap_figure(result: SlideResult, task: str, alpha: float = 0.55) -> Figure:
    """The slide's heatmap of one task with its name, the slide's call, a colour legend
    (P(class) from 0 to 1, untinted = glass or not scored) and a scale bar."""
    shown = result.shown_class(task)
    tiles = result.task_tiles(task)
    scored = tiles[tiles[probability_column(shown)].notna()]
    image = probability_heatmap(result.thumbnail, result.downsample, scored, shown, alpha)
    height, width = image.shape[:2]
    scale = max(width, height) / 8.0
    figure = Figure(figsize=(max(width / scale, 4.0) + 1.5, max(height / scale, 3.0) + 0.8))
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.02, 0.04, 0.78, 0.84))
    axes.imshow(image, interpolation="nearest")
    axes.set_axis_off()
    call = result.call_text(task).split(": ", 1)[1]
    axes.set_title(f"{task}: P({shown}) per tile; slide call {call}", fontsize=9)
    microns = scale_bar_microns(width * result.downsample * result.microns_per_pixel)
    bar = microns / (result.downsample * result.microns_per_pixel)
    x0, y0 = width * 0.04, height * 0.95
    axes.plot([x0, x0 + bar], [y0, y0], color="black", linewidth=3, solid_capstyle="butt")
    axes.text(x0 + bar / 2, y0 - height * 0.02, _length_text(microns), ha="center", va="bottom")
    colours = [np.array(c) / 255 for c in ((33, 102, 172), (247, 247, 247), (178, 24, 43))]
    cmap = LinearSegmentedColormap.from_list("probability", colours)
    legend_axes = figure.add_axes((0.84, 0.12, 0.03, 0.7))
    bar_image = legend_axes.imshow(np.linspace(1, 0, 256)[:, None], aspect="auto", cmap=cmap)
    bar_image.set_extent((0, 1, 0, 1))
    legend_axes.set_xticks([])
    legend_axes.yaxis.tick_right()
    legend_axes.yaxis.set_label_position("right")
    legend_axes.set_ylabel(f"P({shown}) [{task}]; untinted: glass or not scored")
    return figure


def figure_png(figure: Figure, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def heatmap_files(result: SlideResult) -> dict[str, bytes]:
    """One heatmap PNG per task."""
    return {
        f"heatmap_{task}.png": figure_png(heatmap_figure(result, task)) for task in result.tasks
    }


def qupath_files(result: SlideResult) -> dict[str, bytes]:
    """One QuPath GeoJSON per task (tiles classified by that task; every task's slide-level
    probabilities on the tissue annotation)."""
    name = "Tissue - " + "; ".join(result.call_text(task) for task in result.tasks)
    return {
        f"qupath_{task}.geojson": json.dumps(
            qupath_geojson(
                result.task_tiles(task),
                result.tasks[task],
                result.mask,
                result.downsample,
                slide_name=f"{result.name}/{task}",
                tissue_measurements=result.slide_measurements(),
                tissue_name=name,
            )
        ).encode()
        for task in result.tasks
    }


def tiles_files(result: SlideResult) -> dict[str, bytes]:
    """Every candidate tile with every task's probabilities, as CSV."""
    return {"tiles.csv": result.tiles.to_csv(index=False).encode()}


SlideFormat = Callable[[SlideResult], dict[str, bytes]]
# name -> files of one slide (file name -> bytes). Adding a format: one function, one entry.
OUTPUT_FORMATS: dict[str, SlideFormat] = {
    "heatmap": heatmap_files,
    "qupath": qupath_files,
    "tiles": tiles_files,
}


# --- one predict run's folder ------------------------------------------------------------------

LATEST = "latest.json"


def new_run_id(now: datetime | None = None, token: str | None = None) -> str:
    """`<UTC time>-<6 hex>`: sorts by time, and two runs in one second still differ."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{(token or uuid.uuid4().hex)[:6]}"


def run_files(
    run_id: str,
    predictions: pd.DataFrame,
    quarantine: pd.DataFrame,
    results: Mapping[str, SlideResult],
    gradcam_png: bytes | None = None,
    formats: Mapping[str, SlideFormat] | None = None,
) -> dict[str, bytes]:
    """Every file of one predict run under `<run_id>/`, and `latest.json` naming that run.

    Earlier runs' folders are left alone (the catalog's dataset never deletes); `latest.json`
    is the one file a new run replaces.
    """
    formats = OUTPUT_FORMATS if formats is None else formats
    files = {
        "predictions.csv": predictions.to_csv(index=False).encode(),
        "quarantine.csv": quarantine.to_csv(index=False).encode(),
    }
    if gradcam_png:
        files["gradcam.png"] = gradcam_png
    for name, result in sorted(results.items()):
        for make in formats.values():
            files.update({f"slides/{name}/{file}": data for file, data in make(result).items()})
    summary = {
        "run_id": run_id,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": len(predictions),
        "quarantined": len(quarantine),
        "slides": sorted(results),
        "formats": list(formats),
        "files": sorted([*files, "run.json"]),
    }
    files["run.json"] = json.dumps(summary, indent=2).encode()
    out = {f"{run_id}/{path}": data for path, data in files.items()}
    out[LATEST] = json.dumps({"run_id": run_id, "folder": run_id}, indent=2).encode()
    return out


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
