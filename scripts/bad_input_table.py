"""Issue 22's bad inputs, each built and run through the project's own code: docs/bad_input.md.

    .venv/bin/python scripts/bad_input_table.py [--out docs/bad_input.md] [--rows 200000]
    .venv/bin/python scripts/bad_input_table.py --only empty_manifest --only dicom_folder

Every case builds its bad input in a fresh temporary "user folder" with patient-id shaped
names (`MRN-4471-Smith`, `PAT_0042`, `..._JohnSmith_DOB19700101_white.png`), snapshots it,
runs the real entry point (`cohort.config.validate_parameters`, `cohort.ingest.ingest_images`,
`cohort.ingest.discover_cohort`, `slides.predict.find_inputs` / `predict_slide`,
`cohort.splits.assign_splits`, `slides.outputs.run_files` through the catalog's dataset) and
records what the project says: the error's text, or the check and reason of the quarantine
report (the table written as quarantine.csv). Nothing here is written by hand: the message
column is the captured text. After each case the script checks that

- the user folder is byte-for-byte as it was (paths, sizes, modification times, SHA-256);
- neither the message nor any log line of the case contains a part of a user's file or folder
  name (MRN, 4471, Smith, John, DOB, 1970, PAT_0042) or the temporary folder's path, except
  where the case opts in (`cohort.privacy.show_file_names: true`);
- nothing raised an exception the project did not mean to raise (a traceback).

Findings 8, 9 and 12 are about outputs rather than refusals: their rows record the captured
outcome (batches, run folders, "Not scored" tiles, heatmap labels) in the message column.
The script exits 1 if any case leaks, crashes or changes the user folder. The project's
modules are imported inside each case: the slide and predict cases pull in TensorFlow, which
`--only` runs of the cohort cases (and their test) do not need.
"""

# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

PROJECT = Path(__file__).resolve().parents[1]
ALLOWED = ["normal", "early", "late"]
IDENTITY = "MRN-4471-Smith_DOB19700101"
NAME_PARTS = ("MRN", "4471", "Smith", "John", "DOB", "1970", "PAT_0042")


# --- what one case is ----------------------------------------------------------------------------


@dataclass
class Outcome:
    check: str
    message: str


@dataclass
class Case:
    kind: str  # short id (`--only`)
    description: str  # the bad input, as the table's first column says it
    finding: int
    build: Callable[[Path], None]  # writes the bad input into the user folder
    run: Callable[[Path, Path], list[Outcome]]  # (user folder, scratch folder) -> what was said
    names_shown: bool = False  # an explicit opt-in to show file names


@dataclass
class Row:
    case: Case
    outcomes: list[Outcome]
    unchanged: bool
    leaks: list[str] = field(default_factory=list)
    crashed: str | None = None
    seconds: float = 0.0


# --- helpers -------------------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under the user's folder: size, modification time and content hash."""
    found = {}
    for path in sorted(folder.rglob("*")):
        stat = path.lstat()
        digest = ""
        if path.is_file() and not path.is_symlink():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        found[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns, digest)
    return found


def tissue(seed: int, side: int = 160) -> np.ndarray:
    """A pink section on white glass: a valid image with tissue."""
    rng = np.random.default_rng(seed)
    image = np.full((side, side, 3), 245, np.uint8)
    image[20:-20, 20:-20] = (190 + seed % 50, 70 + seed % 30, 150)
    image[20:-20, 20:-20] += rng.integers(0, 5, (side - 40, side - 40, 3), dtype=np.uint8)
    return image


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def png_header_only(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header declares a huge image (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def raised(call: Callable[[], Any]) -> list[Outcome]:
    """The message of the error the project raises on purpose (ValueError and its kinds)."""
    try:
        call()
    except ValueError as error:  # CohortConfigError, SlideManifestError, split errors
        return [Outcome(type(error).__name__, str(error))]
    return [Outcome("(accepted)", "no error raised")]


def report_rows(report: pd.DataFrame) -> list[Outcome]:
    """The quarantine report's rows (the text of quarantine.csv) as check / `file: reason`."""
    return [Outcome(str(r.check), f"{r.file}: {r.reason}") for r in report.itertuples()]


# --- finding 1: unknown configuration keys -----------------------------------------------------

TYPOS: dict[str, tuple[str, dict[str, Any]]] = {
    "typo_cohort": ("cohort.sorce", {"cohort": {"sorce": {"layout": "synthetic"}}}),
    "typo_cohort_checks": (
        "cohort.checks.min_tisue_fraction",
        {"cohort": {"checks": {"min_tisue_fraction": 0.1}}},
    ),
    "typo_patches": ("patches.patchsize", {"patches": {"patchsize": 256}}),
    "typo_predict": ("predict.patient_id_regx", {"predict": {"patient_id_regx": None}}),
    "typo_classification": (
        "classification.architectures.cnn.training.epoch",
        {"classification": {"architectures": {"cnn": {"training": {"epoch": 1}}}}},
    ),
    "typo_evaluation": (
        "evaluation.texture.colour_bin",
        {"evaluation": {"texture": {"colour_bin": 8}}},
    ),
    "typo_engine": ("engine.n_worker", {"engine": {"n_worker": 4}}),
    "typo_privacy": (
        "cohort.privacy.show_file_name",
        {"cohort": {"privacy": {"show_file_name": True}}},
    ),
    "typo_block": ("a block name (cohrt)", {"cohrt": {"source": {"layout": "synthetic"}}}),
}


def _params_case(kind: str, key: str, params: dict[str, Any]) -> Case:
    def build(user: Path) -> None:
        (user / "conf" / "local").mkdir(parents=True)
        (user / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(params))

    def run(user: Path, _: Path) -> list[Outcome]:
        from ssc_skin.cohort.config import validate_parameters

        loaded = yaml.safe_load((user / "conf" / "local" / "parameters.yml").read_text())
        return raised(lambda: validate_parameters(loaded))

    return Case(kind, f"misspelt key `{key}` in parameters.yml", 1, build, run)


# --- findings 2 and 5: a folder cohort (the quarantine report, logs) ----------------------------


def _ingest(user: Path, **cohort_extra: Any) -> pd.DataFrame:
    from ssc_skin.cohort import ingest

    cohort = {
        "source": {"layout": "folder", "root": str(user / "cohort")},
        "checks": {"min_tissue_fraction": 0.05, "allowed_labels": ALLOWED},
        "masks": "auto",
        **cohort_extra,
    }
    return ingest.ingest_images(cohort, min_side=64, min_saturation=12, key="table").report


def _folder_case(
    kind: str,
    description: str,
    finding: int,
    files: Callable[[Path], None],
    names_shown: bool = False,
) -> Case:
    def build(user: Path) -> None:
        save(user / "cohort" / "normal" / "S0007_a.png", tissue(7))  # one valid image
        files(user / "cohort")

    def run(user: Path, _: Path) -> list[Outcome]:
        extra = {"privacy": {"show_file_names": True}} if names_shown else {}
        return report_rows(_ingest(user, **extra))

    return Case(kind, description, finding, build, run, names_shown)


def _empty_file(root: Path) -> None:
    path = root / "normal" / "PAT_0042_JohnSmith_DOB19700101_white.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def _not_an_image(root: Path) -> None:
    (root / "late" / "PAT_0042").mkdir(parents=True)
    (root / "late" / "PAT_0042" / f"{IDENTITY}.png").write_bytes(b"not an image " * 8)


def _truncated(root: Path) -> None:
    save(root / "early" / "PAT_0042_JohnSmith.png", tissue(3))
    path = root / "early" / "PAT_0042_JohnSmith.png"
    path.write_bytes(path.read_bytes()[:400])


def _duplicate(root: Path) -> None:
    save(root / "late" / "PAT_0042_a.png", tissue(11))
    save(root / "late" / "PAT_0042_JohnSmith_copy.png", tissue(11))


def _unknown_label(root: Path) -> None:
    save(root / "MRN-4471-Smith" / "PAT_0042_a.png", tissue(12))


def _no_patient_id(root: Path) -> None:
    save(root / "normal" / "_JohnSmith_DOB19700101.png", tissue(13))


def _link_outside(root: Path) -> None:
    outside = root.parent / "elsewhere"
    save(outside / "PAT_0042_JohnSmith.png", tissue(14))
    (root / "late").mkdir(parents=True, exist_ok=True)
    (root / "late" / "PAT_0042_JohnSmith_link.png").symlink_to(outside / "PAT_0042_JohnSmith.png")


def _bomb(root: Path) -> None:
    png_header_only(root / "late" / "PAT_0042_JohnSmith_huge.png", 100_000, 100_000)


def _not_a_cohort_image(root: Path) -> None:
    (root / "normal").mkdir(parents=True, exist_ok=True)
    (root / "normal" / "PAT_0042_JohnSmith_notes.docx").write_bytes(b"PK\x03\x04 notes")


# --- finding 3: the manifest itself ---------------------------------------------------------------

LONG_NAME = "MRN-4471-Smith_JohnSmith_DOB19700101" * 12 + ".csv"  # > 255 bytes: ENAMETOOLONG


def _manifest_case(kind: str, description: str, content: bytes | None, name: str) -> Case:
    def build(user: Path) -> None:
        if content is not None:
            (user / name).write_bytes(content)

    def run(user: Path, _: Path) -> list[Outcome]:
        from ssc_skin.cohort import ingest

        source = {"layout": "manifest", "manifest": str(user / name)}
        return raised(lambda: ingest.discover_cohort(source))

    return Case(kind, description, 3, build, run)


def _too_long_root() -> Case:
    def run(user: Path, _: Path) -> list[Outcome]:
        from ssc_skin.cohort.config import validate_parameters

        source = {"layout": "folder", "root": str(user / LONG_NAME)}
        return raised(lambda: validate_parameters({"cohort": {"source": source}}, check_paths=True))

    return Case(
        "too_long_root",
        "cohort folder path longer than the OS allows (checked before the run)",
        3,
        lambda user: None,
        run,
    )


# --- finding 4: a large manifest of missing and unreadable files ---------------------------------


def _large_manifest_case(rows: int) -> Case:
    measured: dict[str, float] = {}

    def build(user: Path) -> None:
        (user / "images").mkdir()
        lines = ["image_path,patient_id,label"]
        for i in range(rows):
            name = f"images/PAT_{i // 3:06d}_{IDENTITY}_{i % 3}.png"
            if i % 10 == 0:
                (user / name).write_bytes(b"not an image " * 4)
            lines.append(f"{name},PAT_{i // 3:06d},{ALLOWED[(i // 3) % 3]}")
        (user / "PAT_0042_cohort.csv").write_text("\n".join(lines) + "\n")

    def run(user: Path, _: Path) -> list[Outcome]:
        from ssc_skin.cohort import ingest

        cohort = {
            "source": {"layout": "manifest", "manifest": str(user / "PAT_0042_cohort.csv")},
            "checks": {"min_tissue_fraction": 0.05, "allowed_labels": ALLOWED},
        }
        start = time.perf_counter()
        report = ingest.ingest_images(cohort, min_side=64, min_saturation=12, key="table").report
        measured["rows_per_s"] = rows / (time.perf_counter() - start)
        first = report.drop_duplicates("check")
        counts = report["check"].value_counts()
        return [
            Outcome(str(r.check), f"{r.reason} ({counts[r.check]:,} rows; e.g. {r.file})")
            for r in first.itertuples()
        ]

    case = Case(
        "large_manifest",
        f"manifest of {rows:,} rows: 90% missing files, 10% unreadable",
        4,
        build,
        run,
    )
    case.measured = measured  # type: ignore[attr-defined]
    return case


# --- findings 6, 7, 11: predict's inputs ----------------------------------------------------------

REGEX = r"^(?P<patient>[A-Za-z0-9]+)"
PREDICT = {"patient_ids": True, "patient_id_regex": None}
SOURCE = {"patient_id_regex": REGEX, "tiff_page": 0}
CHECKS = {"min_tissue_fraction": 0.05}


def _preprocess_config() -> Any:
    from ssc_skin.preprocessing.preprocess import PreprocessConfig

    return PreprocessConfig(
        patch_size=64,
        stride=64,
        min_dermis_fraction=0.5,
        unet_input_size=16,
        slide={"target_microns_per_pixel": 2.0, "batch_size": 8},
    )


def _find_inputs(user: Path, **extra: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    from ssc_skin.slides import predict as sp

    params = {**PREDICT, "input": str(user / "new"), **extra}
    images, report, _ = sp.find_inputs(params, SOURCE, CHECKS, _preprocess_config())
    return images, report


def _accepted(images: pd.DataFrame) -> list[Outcome]:
    return [
        Outcome(
            f"(accepted as {r.kind})",
            f"{r.image}: kind {r.kind}, {r.microns_per_pixel:g} um/px from {r.mpp_source}",
        )
        for r in images.itertuples()
    ]


def _slide(path: Path, mpp: float | None, style: str = "aperio", size=(1600, 1200)) -> None:
    from ssc_skin.slides import synthetic as synthetic_slides

    path.parent.mkdir(parents=True, exist_ok=True)
    synthetic_slides.write_synthetic_slide(path, *size, 2, mpp=mpp, style=style, seed=1)


def _pyramid_case(style: str) -> Case:
    def build(user: Path) -> None:
        _slide(user / "new" / f"{IDENTITY}_{style}.tif", 0.5, style)

    def run(user: Path, _: Path) -> list[Outcome]:
        images, report = _find_inputs(user)
        return _accepted(images) + report_rows(report)

    label = {"ome": "OME-TIFF pyramid", "subifd": "TIFF pyramid in sub-IFDs"}[style]
    return Case(f"{style}_slide", f"{label} given to predict", 6, build, run)


def _no_mpp_case() -> Case:
    def build(user: Path) -> None:
        _slide(user / "new" / f"{IDENTITY}_1.tif", None, "generic")

    def run(user: Path, _: Path) -> list[Outcome]:
        return report_rows(_find_inputs(user)[1])

    return Case("no_mpp", "slide without pixel size (no metadata, no manifest)", 7, build, run)


def _fine_scan_case() -> Case:
    def build(user: Path) -> None:
        _slide(user / f"{IDENTITY}_40x.svs", 0.25, size=(3200, 2400))

    def run(user: Path, _: Path) -> list[Outcome]:
        from ssc_skin.slides import checks

        facts, _ = checks.validate_slide(user / f"{IDENTITY}_40x.svs", 64, 2.0)
        return [
            Outcome(
                "(accepted: read level)",
                f"target 2 um/px read from level {facts['read_level']} at downsample "
                f"{facts['read_downsample']:g} = "
                f"{facts['read_downsample'] * facts['microns_per_pixel']:g} um/px "
                "(area-averaged from >= 2x finer)",
            )
        ]

    return Case(
        "fine_scan", "slide scanned at 0.25 um/px (40x), no level at 2 um/px", 7, build, run
    )


def _dicom_case() -> Case:
    def build(user: Path) -> None:
        series = user / "new" / IDENTITY
        series.mkdir(parents=True)
        for uid in ("1.2.826.0.1.3680043.8.498.11", "1.2.826.0.1.3680043.8.498.12"):
            (series / f"{uid}.dcm").write_bytes(b"not really DICOM")

    def run(user: Path, _: Path) -> list[Outcome]:
        return report_rows(_find_inputs(user)[1])

    return Case(
        "dicom_folder",
        "DICOM folder `MRN-4471-Smith_DOB19700101/` of 2 .dcm files (fake bytes)",
        11,
        build,
        run,
    )


def _mirax_case() -> Case:
    def build(user: Path) -> None:
        new = user / "new"
        (new / "PAT_0042").mkdir(parents=True)
        (new / "PAT_0042.mrxs").write_bytes(b"[GENERAL]\n")
        (new / "PAT_0042" / "Slidedat.ini").write_text("[GENERAL]\n")
        (new / "PAT_0042" / "Data0000.dat").write_bytes(b"\0" * 16)

    def run(user: Path, _: Path) -> list[Outcome]:
        return report_rows(_find_inputs(user)[1])

    return Case("mirax", "MIRAX `PAT_0042.mrxs` with its data folder (fake bytes)", 11, build, run)


def _slide_manifest_case(kind: str, description: str, text: str | None) -> Case:
    name = f"{IDENTITY}_mpp.csv"

    def build(user: Path) -> None:
        _slide(user / "new" / "PAT_0042_1.tif", None, "generic")
        if text is not None:
            (user / name).write_text(text.replace("{new}", str(user / "new")))

    def run(user: Path, _: Path) -> list[Outcome]:
        from ssc_skin.slides.predict import SlideManifestError

        try:
            images, report = _find_inputs(user, slide_manifest=str(user / name))
        except SlideManifestError as error:
            return [Outcome(type(error).__name__, str(error))]
        return _accepted(images) + report_rows(report)

    return Case(kind, description, 11, build, run)


# --- findings 8 and 12: one large slide, streamed ---------------------------------------------


class FakeModel:
    """A task model without TensorFlow: P(ssc) is the patch's mean brightness."""

    task, architecture, runtime, input_size = "binary", "fake", "keras", 64
    class_names = ("normal", "ssc")

    def probabilities(self, patches: np.ndarray) -> np.ndarray:
        p = np.asarray(patches, float).mean(axis=(1, 2, 3)) / 255
        return np.stack([1 - p, p], axis=1)


def parity_unet(patches: np.ndarray) -> np.ndarray:
    """Dermis where a patch's first pixel is even: about half the tiles are gated out."""
    from ssc_skin.constants import DERMIS

    scores = np.zeros((*patches.shape[:3], 4), np.float32)
    scores[..., 0] = 0.5
    scores[(patches[:, 0, 0, 0] % 2) == 0, :, :, DERMIS] = 1.0
    return scores


def _predict_large_slide(user: Path) -> tuple[list[dict[str, Any]], Any, Any]:
    from ssc_skin.preprocessing.preprocess import Preprocessor
    from ssc_skin.preprocessing.slides import SlideSettings
    from ssc_skin.slides import predict as sp
    from ssc_skin.slides import tiles as wsi_tiles

    config = _preprocess_config()
    settings = SlideSettings.from_config(config)
    original, batches = wsi_tiles.iter_patches, []

    def counted(*args: Any, **kwargs: Any) -> Any:  # counts the batches predict reads
        for batch in original(*args, **kwargs):
            batches.append(len(batch.images))
            yield batch

    wsi_tiles.iter_patches = counted
    try:
        rows, result = sp.predict_slide(
            str(user / "PAT_0042_JohnSmith_big.svs"),
            "im-slide",
            [FakeModel()],
            Preprocessor(config, parity_unet),
            settings,
            0.6,
        )
    finally:
        wsi_tiles.iter_patches = original
    return rows, result, batches


def _build_large_slide(user: Path) -> None:
    from ssc_skin.slides import synthetic as synthetic_slides

    synthetic_slides.write_synthetic_slide(
        user / "PAT_0042_JohnSmith_big.svs", 4800, 3600, 3, "late", mpp=0.5, seed=3
    )


def _streamed_case() -> Case:
    def run(user: Path, _: Path) -> list[Outcome]:
        rows, result, batches = _predict_large_slide(user)
        row = rows[0]
        return [
            Outcome(
                "(streamed)",
                f"{len(result.tiles)} candidate tiles read in {len(batches)} batches of at most "
                f"{max(batches)} patches; {row['n_patches']} classified, selection "
                f"{row['selection']}, P(ssc) {row['probability_ssc']:.3f}",
            )
        ]

    return Case(
        "large_slide", "4800x3600 px slide, more tiles than one batch", 8, _build_large_slide, run
    )


def _not_scored_case() -> Case:
    def run(user: Path, _: Path) -> list[Outcome]:
        from ssc_skin.slides import outputs

        _, result, _ = _predict_large_slide(user)
        collection = json.loads(outputs.qupath_files(result)["qupath_binary.geojson"])
        features = collection["features"]
        not_scored = [
            f
            for f in features
            if f["properties"].get("classification", {}).get("name") == outputs.NOT_SCORED
        ]
        measured = sorted(not_scored[0]["properties"]["measurements"]) if not_scored else []
        tissue_ = next(f for f in features if f["properties"].get("objectType") == "annotation")
        figure = outputs.heatmap_figure(result, "binary")
        title = figure.axes[0].get_title()
        legend = figure.axes[1].get_ylabel()
        bar = [t.get_text() for t in figure.axes[0].texts]
        return [
            Outcome(
                "(QuPath GeoJSON)",
                f"{len(not_scored)} tiles classified '{outputs.NOT_SCORED}' with measurements "
                f"{measured}; tissue annotation '{tissue_['properties'].get('name')}' "
                f"{tissue_['properties'].get('measurements')}",
            ),
            Outcome("(heatmap)", f"title '{title}'; legend '{legend}'; scale bar {bar}"),
        ]

    return Case(
        "gated_tiles",
        "slide whose tiles are half outside dermis (gated out)",
        12,
        _build_large_slide,
        run,
    )


# --- finding 9: a second predict run into the same output folder ---------------------------------


def _two_runs_case() -> Case:
    def build(user: Path) -> None:
        save(user / "new" / "PAT_0042_a.png", tissue(21))

    def run(user: Path, scratch: Path) -> list[Outcome]:
        from kedro.io import DataCatalog

        from ssc_skin.slides import outputs

        conf = PROJECT / "conf" / "base" / "catalog_export_predict.yml"
        entry = yaml.safe_load(conf.read_text())["predict_runs"]
        catalog = DataCatalog.from_config(
            {"predict_runs": {**entry, "path": str(scratch / "predict")}}
        )
        predictions = pd.DataFrame({"image": ["im-x"], "label": ["normal"]})
        ids = []
        for token in ("aaaaaa", "bbbbbb"):
            ids.append(outputs.new_run_id(token=token))
            files = outputs.run_files(ids[-1], predictions, pd.DataFrame(), {})
            catalog.save("predict_runs", files)
        kept = sorted(p.name for p in (scratch / "predict").iterdir() if p.is_dir())
        latest = json.loads((scratch / "predict" / outputs.LATEST).read_text())
        return [
            Outcome(
                "(run folders)",
                f"{len(kept)} run folders kept ({', '.join('<run>/' for _ in kept)}"
                f"predictions.csv in each: "
                f"{all((scratch / 'predict' / k / 'predictions.csv').is_file() for k in kept)}); "
                f"latest.json run_id is the second run: {latest['run_id'] == ids[1]}",
            )
        ]

    return Case("second_run", "a second predict run into the same output folder", 9, build, run)


# --- finding 10: a saved split whose patient is gone ---------------------------------------------


def _split_case() -> Case:
    split = {"val_fraction": 0.25, "test_fraction": 0.25, "seed": 3, "reuse_saved": True}

    def manifest(drop: set[str] = frozenset()) -> pd.DataFrame:  # type: ignore[assignment]
        rows = [
            {
                "patient": f"PAT_{label[0]}{p:04d}",
                "label": label,
                "fixed_split": None,
                "content_hash": f"{label}-{p}-{i}",
            }
            for label in ("normal", "late")
            for p in range(4)
            for i in range(2)
        ]
        return pd.DataFrame([r for r in rows if r["patient"] not in drop])

    def build(user: Path) -> None:
        from ssc_skin.cohort import splits

        splits.assign_splits(manifest(), split).to_csv(user / "patient_splits.csv", index=False)

    def run(user: Path, _: Path) -> list[Outcome]:
        from ssc_skin.cohort import splits

        saved = pd.read_csv(user / "patient_splits.csv")
        gone = set(saved.query("label == 'normal' and split == 'val'")["patient"])
        return raised(lambda: splits.assign_splits(manifest(gone), split, saved))

    return Case(
        "split_patient_gone",
        "saved split reused, a val patient no longer in the cohort",
        10,
        build,
        run,
    )


# --- the cases -----------------------------------------------------------------------------------


def cases(rows: int = 200_000) -> list[Case]:
    return [
        *(_params_case(kind, key, params) for kind, (key, params) in TYPOS.items()),
        _folder_case(
            "empty_file",
            "empty file `normal/PAT_0042_JohnSmith_DOB19700101_white.png`",
            2,
            _empty_file,
        ),
        _folder_case(
            "not_an_image", f"text saved as `late/PAT_0042/{IDENTITY}.png`", 2, _not_an_image
        ),
        _folder_case("truncated", "PNG cut short `early/PAT_0042_JohnSmith.png`", 2, _truncated),
        _folder_case("duplicate", "same pixels under two names of PAT_0042", 2, _duplicate),
        _folder_case(
            "unknown_label",
            "label folder named like a patient (`MRN-4471-Smith/`)",
            2,
            _unknown_label,
        ),
        _folder_case(
            "no_patient_id",
            "file name without a patient id (`_JohnSmith_DOB19700101.png`)",
            2,
            _no_patient_id,
        ),
        _folder_case("link_outside", "link to a file outside the cohort folder", 2, _link_outside),
        _folder_case(
            "not_image_extension",
            "`PAT_0042_JohnSmith_notes.docx` among the images",
            2,
            _not_a_cohort_image,
        ),
        _folder_case(
            "names_opt_in",
            "empty file, with `cohort.privacy.show_file_names: true`",
            2,
            _empty_file,
            names_shown=True,
        ),
        _manifest_case("empty_manifest", "empty manifest CSV", b"", f"{IDENTITY}.csv"),
        _manifest_case(
            "blank_manifest", "manifest of blank lines only", b"\n\n", f"{IDENTITY}.csv"
        ),
        _manifest_case(
            "too_long_manifest", "manifest path longer than the OS allows", None, LONG_NAME
        ),
        _too_long_root(),
        _manifest_case(
            "missing_manifest", "manifest path that does not exist", None, "PAT_0042.csv"
        ),
        _manifest_case(
            "manifest_latin1",
            "manifest in latin-1, not UTF-8",
            "image_path,patient_id,label\ncafé.png,PAT_0042,normal\n".encode("latin-1"),
            f"{IDENTITY}.csv",
        ),
        _manifest_case(
            "manifest_comma",
            "manifest row with an unquoted comma",
            b"image_path,patient_id,label\na.png,PAT_0042,normal\nb.png,PAT_0043,SSc, late\n",
            f"{IDENTITY}.csv",
        ),
        _manifest_case(
            "manifest_columns",
            "manifest without a patient_id column",
            b"image_path,label\nPAT_0042_a.png,normal\n",
            f"{IDENTITY}.csv",
        ),
        _large_manifest_case(rows),
        _folder_case(
            "decompression_bomb", "PNG declaring 100,000 x 100,000 px (header only)", 5, _bomb
        ),
        _pyramid_case("ome"),
        _pyramid_case("subifd"),
        _no_mpp_case(),
        _fine_scan_case(),
        _streamed_case(),
        _two_runs_case(),
        _split_case(),
        _dicom_case(),
        _mirax_case(),
        _slide_manifest_case(
            "slide_manifest_mpp",
            "slide manifest giving mpp to a slide without metadata",
            "slide_path,microns_per_pixel\n{new}/PAT_0042_1.tif,0.5\n",
        ),
        _slide_manifest_case(
            "slide_manifest_implausible",
            "slide manifest mpp 352.7 (a typo)",
            "slide_path,microns_per_pixel\n{new}/PAT_0042_1.tif,352.7\n",
        ),
        _slide_manifest_case(
            "slide_manifest_typo",
            "slide manifest column `micron_per_pixel`",
            "slide_path,micron_per_pixel\n{new}/PAT_0042_1.tif,0.5\n",
        ),
        _slide_manifest_case(
            "slide_manifest_columns",
            "slide manifest without microns_per_pixel",
            "slide_path\n{new}/PAT_0042_1.tif\n",
        ),
        _slide_manifest_case("slide_manifest_empty", "empty slide manifest", ""),
        _slide_manifest_case(
            "slide_manifest_missing", "slide manifest path that does not exist", None
        ),
        _not_scored_case(),
    ]


# --- running -------------------------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def leaks(texts: list[str], folder: Path) -> list[str]:
    """Parts of a user's names, or the folder's path, that show in `texts`."""
    found = []
    for text in texts:
        for part in (*NAME_PARTS, str(folder)):
            if part in text:
                found.append(f"{part!r} in {text[:160]!r}")
    return found


def run_case(case: Case, tmp: Path) -> Row:
    user, scratch = tmp / "user", tmp / "scratch"
    user.mkdir(parents=True)
    scratch.mkdir()
    case.build(user)
    before = snapshot(user)
    collect, logger = _Collect(), logging.getLogger("ssc_skin")
    level = logger.level
    logger.addHandler(collect)
    logger.setLevel(logging.INFO)
    start = time.perf_counter()
    crashed, outcomes = None, []
    try:
        outcomes = case.run(user, scratch)
    except Exception:  # noqa: BLE001 - a crash is a finding of this script, not its end
        crashed = traceback.format_exc()
        outcomes = [Outcome("CRASH", crashed.strip().splitlines()[-1])]
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)
    seconds = time.perf_counter() - start
    unchanged = snapshot(user) == before
    shown = [o.message for o in outcomes] + collect.lines
    found = [] if case.names_shown else leaks(shown, tmp)
    return Row(case, outcomes, unchanged, found, crashed, seconds)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def markdown(rows: list[Row], extra: list[str]) -> str:
    lines = [
        "# Bad input: kind -> check -> message",
        "",
        "Generated by `scripts/bad_input_table.py` (do not edit by hand): each row's bad input "
        "was built in a temporary user folder with patient-id shaped names (`MRN-4471-Smith`, "
        "`PAT_0042`, `..._JohnSmith_DOB19700101_white.png`) and run through the project's own "
        "entry points; the message column is the text the project produced (an error's "
        "message, or `file: reason` of the quarantine report that becomes quarantine.csv, "
        "whose `file` is a pseudonym). Findings are those of issue 22. *Name or path shown* "
        "checks the message and every log line of the case for a part of a user's name "
        "(MRN, 4471, Smith, John, DOB, 1970, PAT_0042) or the folder's path. Rows in "
        "parentheses record an outcome (findings 6-9, 12), not a refusal.",
        "",
        "| kind | finding | check | message / quarantine reason | name or path shown | "
        "user folder unchanged |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        shown = "opt-in" if row.case.names_shown else ("**yes**" if row.leaks else "no")
        unchanged = "yes" if row.unchanged else "**no**"
        for i, outcome in enumerate(row.outcomes or [Outcome("(none)", "nothing reported")]):
            kind = _cell(row.case.description) if i == 0 else "(same input)"
            lines.append(
                f"| {kind} | {row.case.finding} | `{_cell(outcome.check)}` | "
                f"{_cell(outcome.message)} | {shown} | {unchanged} |"
            )
    return "\n".join([*lines, "", *extra, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=PROJECT / "docs" / "bad_input.md")
    parser.add_argument("--rows", type=int, default=200_000, help="finding 4's manifest rows")
    parser.add_argument("--only", action="append", help="run these kinds only (no file written)")
    args = parser.parse_args(argv)
    chosen = [c for c in cases(args.rows) if not args.only or c.kind in args.only]
    rows = []
    for case in chosen:
        with tempfile.TemporaryDirectory(prefix="bad_input_") as tmp:
            rows.append(run_case(case, Path(tmp)))
        row = rows[-1]
        status = "CRASH" if row.crashed else ("LEAK" if row.leaks else "ok")
        status += "" if row.unchanged else " FOLDER CHANGED"
        print(f"{case.kind:28s} {status:6s} {row.seconds:6.1f} s", flush=True)  # noqa: T201
        for problem in [*row.leaks, *([row.crashed] if row.crashed else [])]:
            print(f"    {problem}", flush=True)  # noqa: T201
    bad = [r for r in rows if r.crashed or r.leaks or not r.unchanged]
    if not args.only:
        large = next(c for c in chosen if c.kind == "large_manifest")
        extra = [
            f"Finding 4: the {args.rows:,}-row manifest above was ingested at "
            f"{large.measured['rows_per_s']:,.0f} rows/s (`ingest.ingest_images` in this run; "
            "the target is >= 1,000). `benchmarks/ingest.py scale` and the ingestion row of "
            "`benchmarks/run.py` measure the same on their own.",
        ]
        args.out.write_text(markdown(rows, extra))
        print(f"wrote {args.out}: {len(rows)} kinds, {len(bad)} with a problem")  # noqa: T201
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
