"""Results on the slide: the probability heatmap and the QuPath GeoJSON."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from ssc_skin.slides import outputs as so
from ssc_skin.slides import synthetic as ss
from ssc_skin.slides import wsi as slides

CLASSES = ["normal", "ssc"]


def tile_table(rows, classes=CLASSES):
    """rows: (x, y, size, P(last class)); the other class gets the rest."""
    frame = pd.DataFrame(rows, columns=["x", "y", "size", "p"])
    frame[so.probability_column(classes[-1])] = frame.pop("p")
    frame[so.probability_column(classes[0])] = 1 - frame[so.probability_column(classes[-1])]
    frame["tissue_fraction"] = 0.75
    return frame


# --- heatmap -----------------------------------------------------------------------------------


def test_colour_map_is_diverging():
    low, middle, high = so.colour_map(np.array([0.0, 0.5, 1.0]))
    assert low[2] > low[0] and high[0] > high[2]  # blue for 0, red for 1
    assert middle.min() > 240  # near white where the model cannot tell


def test_heatmap_tints_tiles_only():
    thumbnail = np.full((50, 80, 3), 120, np.uint8)
    tiles = tile_table([(0, 0, 200, 1.0), (400, 200, 200, 0.0)])  # downsample 10: 20 px tiles
    heat = so.probability_heatmap(thumbnail, 10.0, tiles, "ssc")
    assert heat.shape == thumbnail.shape and heat.dtype == np.uint8
    red, blue = heat[5, 5].astype(int), heat[25, 45].astype(int)
    assert red[0] > red[2] + 30 and blue[2] > blue[0] + 30
    assert (heat[45, 75] == 120).all()  # under no tile: the thumbnail as it was
    assert (heat[:20, :20] == heat[5, 5]).all() and (heat[20:, :20] == 120).all()


def test_heatmap_averages_overlapping_tiles():
    thumbnail = np.full((10, 10, 3), 255, np.uint8)
    tiles = tile_table([(0, 0, 10, 1.0), (5, 0, 10, 0.0)])
    heat = so.probability_heatmap(thumbnail, 1.0, tiles, "ssc", alpha=1.0)
    assert (heat[0, 7] > 240).all()  # mean 0.5 -> white


def test_heatmap_rejects_bad_input():
    with pytest.raises(ValueError, match="probability_ssc"):
        so.probability_heatmap(
            np.zeros((4, 4, 3), np.uint8),
            1.0,
            pd.DataFrame({"x": [0], "y": [0], "size": [2]}),
            "ssc",
        )
    with pytest.raises(ValueError, match="HxWx3"):
        so.probability_heatmap(np.zeros((4, 4), np.uint8), 1.0, tile_table([]), "ssc")


# --- GeoJSON -----------------------------------------------------------------------------------


def check_qupath(collection: dict, tiles: int, outline: bool = True) -> None:
    """The shape QuPath's import reads, asserted explicitly (no schema library needed)."""
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert len(features) == tiles + int(outline)
    kinds = [f["properties"]["objectType"] for f in features]
    assert kinds.count("detection") == tiles and kinds.count("annotation") == int(outline)
    for feature in features:
        assert feature["type"] == "Feature"
        assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
        polygons = (
            feature["geometry"]["coordinates"]
            if feature["geometry"]["type"] == "MultiPolygon"
            else [feature["geometry"]["coordinates"]]
        )
        for polygon in polygons:
            for ring in polygon:
                assert len(ring) >= 4 and ring[0] == ring[-1]
                assert all(len(p) == 2 and all(isinstance(v, int | float) for v in p) for p in ring)
        classification = feature["properties"]["classification"]
        assert isinstance(classification["name"], str) and len(classification["color"]) == 3
        assert isinstance(feature["properties"]["measurements"], dict)
    json.dumps(collection)  # plain JSON types only (no numpy scalars)


def test_geojson_tiles_are_detections_with_probabilities():
    tiles = tile_table([(0, 0, 256, 0.9), (256, 0, 256, 0.2)])
    collection = so.qupath_geojson(tiles, CLASSES)
    check_qupath(collection, tiles=2, outline=False)
    first, second = collection["features"]
    assert first["geometry"]["coordinates"] == [[[0, 0], [256, 0], [256, 256], [0, 256], [0, 0]]]
    assert first["properties"]["classification"]["name"] == "ssc"
    assert second["properties"]["classification"]["name"] == "normal"
    assert first["properties"]["measurements"] == {
        "probability_normal": pytest.approx(0.1),
        "probability_ssc": 0.9,
        "tissue_fraction": 0.75,
    }
    assert first["id"] != second["id"]
    assert so.qupath_geojson(tiles, CLASSES)["features"][0]["id"] == first["id"]  # stable


def test_unscored_tiles_are_not_made_up():
    tiles = tile_table([(0, 0, 64, np.nan)])
    feature = so.qupath_geojson(tiles, CLASSES)["features"][0]
    assert feature["properties"]["classification"]["name"] == so.NOT_SCORED
    assert "probability_ssc" not in feature["properties"]["measurements"]


def test_tissue_outline_in_level0_pixels_with_holes():
    mask = np.zeros((40, 60), bool)
    mask[10:30, 10:50] = True
    mask[15:25, 20:30] = False  # a hole (e.g. a tear)
    mask[2, 2] = True  # a speck: dropped
    polygons = so.tissue_polygons(mask, 8.0)
    assert len(polygons) == 1 and len(polygons[0]) == 2  # outer ring + the hole
    outer = np.array(polygons[0][0])
    assert outer[:, 0].min() == pytest.approx(10 * 8 + 4, abs=8)
    assert outer[:, 0].max() == pytest.approx(49 * 8 + 4, abs=8)
    assert outer[:, 1].min() == pytest.approx(10 * 8 + 4, abs=8)
    collection = so.qupath_geojson(tile_table([]), CLASSES, mask, 8.0)
    check_qupath(collection, tiles=0)
    assert collection["features"][0]["geometry"]["type"] == "Polygon"


def test_two_regions_make_a_multipolygon():
    mask = np.zeros((30, 30), bool)
    mask[2:10, 2:10] = mask[15:28, 15:28] = True
    outline = so.qupath_geojson(tile_table([]), CLASSES, mask, 2.0)["features"][0]
    assert outline["geometry"]["type"] == "MultiPolygon"
    assert len(outline["geometry"]["coordinates"]) == 2


def test_schema_accepts_ours_and_rejects_broken_features():
    jsonschema = pytest.importorskip("jsonschema")
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    collection = so.qupath_geojson(tile_table([(40, 40, 32, 0.7)]), CLASSES, mask, 4.0)
    jsonschema.validate(collection, so.QUPATH_GEOJSON_SCHEMA)
    for breaking in (
        lambda f: f["properties"].pop("objectType"),
        lambda f: f["properties"].pop("classification"),
        lambda f: f["properties"].update(objectType="roi"),
        lambda f: f["properties"]["measurements"].update(p="high"),
        lambda f: f.pop("geometry"),
        lambda f: f["geometry"]["coordinates"][0].__delitem__(slice(2, None)),
        lambda f: f["geometry"]["coordinates"][0][0].append(1.0),
    ):
        broken = json.loads(json.dumps(collection))
        breaking(broken["features"][-1])
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, so.QUPATH_GEOJSON_SCHEMA)


def test_whole_slide_to_geojson_and_heatmap(tmp_path):
    """From a synthetic slide: one detection per tile, outline over the sections."""
    record = ss.write_synthetic_slide(tmp_path / "s.svs", 4000, 3000, sections=2, seed=5)
    facts, tissue = slides.validate_slide(record.path, 64, 2.0)
    tiles = pd.concat(
        [b.tiles for b in slides.iter_slide_batches(record.path, 64, 2.0)], ignore_index=True
    )
    rng = np.random.default_rng(0)
    tiles["probability_ssc"] = rng.uniform(size=len(tiles))
    tiles["probability_normal"] = 1 - tiles["probability_ssc"]
    collection = so.qupath_geojson(tiles, CLASSES, tissue.mask, tissue.plan.thumbnail_downsample)
    check_qupath(collection, tiles=facts["tiles"])
    outline = collection["features"][0]["geometry"]
    rings = (
        [outline["coordinates"][0]]
        if outline["type"] == "Polygon"
        else [p[0] for p in outline["coordinates"]]
    )
    points = np.concatenate([np.array(r) for r in rings])
    for x, y, w, h in record.sections:  # every section lies within the outline's extent
        assert points[:, 0].min() <= x + w / 2 <= points[:, 0].max()
        assert points[:, 1].min() <= y + h / 2 <= points[:, 1].max()
    assert points.max() <= 4000 + 64
    heat = so.probability_heatmap(tissue.thumbnail, tissue.plan.thumbnail_downsample, tiles, "ssc")
    assert heat.shape == tissue.thumbnail.shape
    assert (heat != tissue.thumbnail).any(axis=2).mean() > 0.1


# --- one slide's result: every task, every format (finding 12, issue 18) --------------------------

TASKS = {"binary": ("normal", "ssc"), "three_class": ("normal", "early", "late")}


def slide_result() -> so.SlideResult:
    """Three scored tiles and one gated out (NaN probabilities, its dermis fraction kept)."""
    tiles = pd.DataFrame(
        {
            "x": [0, 256, 512, 768],
            "y": [0, 0, 256, 256],
            "size": 256,
            "tissue_fraction": 0.8,
            "dermis_fraction": [0.9, 0.7, 0.6, 0.1],
            "scored": [True, True, True, False],
        }
    )
    rng = np.random.default_rng(1)
    calls = {}
    for task, classes in TASKS.items():
        p = rng.dirichlet(np.ones(len(classes)), size=4)
        p[3] = np.nan
        for i, c in enumerate(classes):
            tiles[so.task_column(task, c)] = p[:, i]
        mean = np.nanmean(p, axis=0)
        calls[task] = {
            "label": classes[int(np.argmax(mean))],
            **{so.probability_column(c): float(mean[i]) for i, c in enumerate(classes)},
        }
    mask = np.zeros((40, 50), bool)
    mask[2:30, 2:45] = True
    thumbnail = np.full((40, 50, 3), 230, np.uint8)
    return so.SlideResult("im-0123abcd", tiles, thumbnail, mask, 32.0, 0.5, dict(TASKS), calls)


def test_heatmap_figure_names_the_task_and_has_a_legend_and_a_scale_bar():
    result = slide_result()
    figure = so.heatmap_figure(result, "three_class")
    image_axes, legend = figure.axes
    assert "three_class" in image_axes.get_title() and "P(late)" in image_axes.get_title()
    assert result.calls["three_class"]["label"] in image_axes.get_title()
    assert "P(late)" in legend.get_ylabel() and "not scored" in legend.get_ylabel()
    # 50 thumbnail px x 32 x 0.5 um = 800 um wide: a 100 um bar (a fifth is 160 um)
    assert [t.get_text() for t in image_axes.texts] == ["100 µm"]
    png = so.figure_png(figure)
    assert png.startswith(b"\x89PNG")


def test_scale_bar_lengths_are_round():
    assert so.scale_bar_microns(800) == 100
    assert so.scale_bar_microns(20_000) == 2000
    assert so.scale_bar_microns(10) == 10  # never zero
    assert so._length_text(2000) == "2 mm" and so._length_text(500) == "500 µm"


def test_every_task_gets_its_heatmap_and_geojson_with_slide_probabilities():
    result = slide_result()
    files = {
        name: data for make in so.OUTPUT_FORMATS.values() for name, data in make(result).items()
    }
    assert set(files) == {
        "heatmap_binary.png",
        "heatmap_three_class.png",
        "qupath_binary.geojson",
        "qupath_three_class.geojson",
        "tiles.csv",
    }
    for task, classes in TASKS.items():
        collection = json.loads(files[f"qupath_{task}.geojson"])
        check_qupath(collection, tiles=4)
        tissue = collection["features"][0]["properties"]
        assert tissue["measurements"]["binary: P(ssc)"] == pytest.approx(
            result.calls["binary"]["probability_ssc"], abs=1e-6
        )
        assert "three_class: P(early)" in tissue["measurements"]
        assert task in tissue["name"]
        names = [f["properties"]["classification"]["name"] for f in collection["features"][1:]]
        assert names[3] == so.NOT_SCORED and set(names[:3]) <= set(classes)
        gated = collection["features"][4]["properties"]["measurements"]
        assert gated == {"tissue_fraction": 0.8, "dermis_fraction": 0.1}
    table = pd.read_csv(io.BytesIO(files["tiles.csv"]))
    assert list(table["scored"]) == [True, True, True, False]


def test_run_files_keep_one_folder_per_run_and_name_the_latest():
    result = slide_result()
    predictions = pd.DataFrame({"image": ["im-0123abcd"], "label": ["ssc"]})
    quarantine = pd.DataFrame(columns=["file", "check", "reason"])
    run = so.new_run_id(datetime(2026, 12, 6, 4, 30, tzinfo=UTC), "abcdef1234")
    assert run == "20261206T043000Z-abcdef"
    files = so.run_files(run, predictions, quarantine, {"im-0123abcd": result}, b"\x89PNG")
    assert json.loads(files["latest.json"])["run_id"] == run
    assert {p for p in files if not p.startswith(f"{run}/")} == {"latest.json"}
    summary = json.loads(files[f"{run}/run.json"])
    assert summary["slides"] == ["im-0123abcd"] and summary["formats"] == list(so.OUTPUT_FORMATS)
    assert f"{run}/slides/im-0123abcd/qupath_binary.geojson" in files
    assert f"{run}/gradcam.png" in files and f"{run}/predictions.csv" in files


def test_a_new_format_is_one_function():
    def outline_only(result: so.SlideResult) -> dict[str, bytes]:
        return {"outline.json": json.dumps(so.tissue_polygons(result.mask, 32.0)).encode()}

    files = so.run_files(
        "r1",
        pd.DataFrame(),
        pd.DataFrame(),
        {"im-1": slide_result()},
        formats={**so.OUTPUT_FORMATS, "outline": outline_only},
    )
    assert "r1/slides/im-1/outline.json" in files and "r1/slides/im-1/tiles.csv" in files
