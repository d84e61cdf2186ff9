"""Predict over a folder of images and whole-slide images: which files, then every task's call.

- `find_inputs`: the files under `predict.input`, multi-file slides grouped as the cohort stage
  groups them (a DICOM folder is one slide named by its folder, a MIRAX data folder belongs to
  its `.mrxs`), an optional slide manifest's per-slide mpp, then the cohort's checks with the
  training run's geometry; pseudonyms out, paths only in the local linkage.
- `predict_all`: images through `inference.predict`, slides streamed here: candidate tiles are
  read, stain-normalised, gated and classified one batch at a time, and only per-tile numbers
  (position, tissue and dermis fraction, probabilities) are kept, so memory does not grow with
  the tissue on the slide. Each slide's row is the mean over its classified tiles, like an
  image's (`aggregation`); its `outputs.SlideResult` feeds every output format.

No Kedro here.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ssc_skin.cohort import ingest
from ssc_skin.cohort.ingest import ImageProblem
from ssc_skin.cohort.privacy import hide_quarantine, pseudonym_key, pseudonymise_records
from ssc_skin.imaging.tissue import MIN_SATURATION
from ssc_skin.inference import predict, serving
from ssc_skin.inference.predict import _NO_PATIENT, UNLABELLED, PredictSetup, TaskModel
from ssc_skin.preprocessing import slides as slide_preprocess
from ssc_skin.preprocessing.preprocess import (
    PreprocessConfig,
    Preprocessor,
    candidate_patches,
    choose_patches,
    selection_counts,
)
from ssc_skin.preprocessing.slides import SlideSettings
from ssc_skin.slides import checks, discovery, metadata, outputs, readers
from ssc_skin.slides import tiles as wsi_tiles

logger = logging.getLogger(__name__)

SLIDE, IMAGE = "slide", "image"
INPUT_COLUMNS = ["image", "patient", "image_path", "kind", "microns_per_pixel", "mpp_source"]
MANIFEST_KEY = "predict.slide_manifest"
MANIFEST_COLUMNS = ("slide_path", "microns_per_pixel")  # `image_path` is read as `slide_path`


class SlideManifestError(ValueError):
    """`predict.slide_manifest` cannot be used; the message names the key, never the path."""


# --- which files ---------------------------------------------------------------------------------


def mark_slides(records: pd.DataFrame) -> pd.Series:
    """Which discovered files are slides; their 'not an image extension' flag is lifted in
    place, since they are read as slides."""
    is_slide_row = (
        records["image_path"].map(lambda p: isinstance(p, str) and readers.is_slide(p)).astype(bool)
    )
    lifted = is_slide_row & (records["problem_check"] == "not_image_extension")
    records.loc[lifted, ["problem_check", "problem"]] = None
    return is_slide_row


def group_multi_file_slides(
    records: pd.DataFrame,
    root: str | Path,
    patient_id_regex: str | None,
    *,
    patient_from: str = "filename",
    allow_outside_root: bool = False,
) -> pd.DataFrame:
    """`records` of a folder with multi-file slides counted once, by the cohort's slide
    discovery (`slides.discovery.discover_slide_folder`): the files of a MIRAX data folder or a .vms
    list are parts of their slide (dropped), and the .dcm files of one folder are one slide
    named by the folder (its patient id from the folder's name, not a UID-style file name)."""
    grouped = discovery.discover_slide_folder(
        root,
        patient_id_regex or ingest.DEFAULT_PATIENT_ID_REGEX,
        allow_outside_root=allow_outside_root,
    )
    known = set(grouped["image_path"].dropna())
    # a link out of the folder is reported, never a part of a slide
    flagged = records["problem_check"].eq("outside_root") if "problem_check" in records else False
    keep = records["image_path"].isna() | records["image_path"].isin(known) | flagged
    parts = int((~keep).sum())
    if parts:
        logger.info("Predict: %d file(s) read as parts of multi-file slides", parts)
    records = records[keep].reset_index(drop=True)
    dicom = grouped[grouped["image_path"].map(lambda p: str(p).lower().endswith(".dcm"))]
    by_path = dicom.set_index("image_path")
    for index, path in records["image_path"].items():
        if path in by_path.index:
            folder = str(by_path.at[path, "relative_path"])
            records.at[index, "relative_path"] = folder
            records.at[index, "patient_id"] = (
                folder.split("/", maxsplit=1)[0]
                if patient_from == "folder" and "/" in folder
                else by_path.at[path, "patient_id"]
            )
    if patient_id_regex is None:
        records["patient_id"] = None
    return records


def discover_inputs(
    path: str | Path,
    patient_id_regex: str | None,
    *,
    patient_from: str = "filename",
    allow_outside_root: bool = False,
) -> pd.DataFrame:
    """`inference.predict.discover_inputs` with multi-file slides grouped."""
    records = predict.discover_inputs(
        path, patient_id_regex, patient_from=patient_from, allow_outside_root=allow_outside_root
    )
    if not Path(path).expanduser().is_dir():
        return records
    return group_multi_file_slides(
        records,
        Path(path).expanduser(),
        patient_id_regex,
        patient_from=patient_from,
        allow_outside_root=allow_outside_root,
    )


# --- the optional slide manifest (per-slide mpp) -------------------------------------------------


def read_slide_manifest(path: str | Path | None) -> pd.DataFrame:
    """`predict.slide_manifest`: a CSV of `slide_path` (or `image_path`) and
    `microns_per_pixel` per slide; relative paths resolve against the manifest's folder.

    Returns (`image_path` resolved, `microns_per_pixel` or NaN, `problem`); a row whose mpp is
    not a plausible number gets a problem and quarantines its slide. A missing or unreadable
    file, or a missing or unknown column, is one `SlideManifestError` naming the key.
    """
    columns = ["image_path", "microns_per_pixel", "problem"]
    if not path:
        return pd.DataFrame(columns=columns)
    manifest = Path(path).expanduser()
    try:
        table = pd.read_csv(manifest, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError as error:
        raise SlideManifestError(f"{MANIFEST_KEY} is not a file") from error
    except pd.errors.EmptyDataError as error:
        raise SlideManifestError(f"{MANIFEST_KEY} is empty (no header row)") from error
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise SlideManifestError(
            f"{MANIFEST_KEY} cannot be read as CSV ({type(error).__name__})"
        ) from error
    table.columns = [str(c).strip().lower() for c in table.columns]
    table = table.rename(columns={"image_path": "slide_path"})
    unknown = [c for c in table.columns if c not in MANIFEST_COLUMNS]
    if unknown:
        hints = [
            f"{c!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
            for c in unknown
            for close in [difflib.get_close_matches(c, MANIFEST_COLUMNS, n=1)]
        ]
        raise SlideManifestError(
            f"{MANIFEST_KEY}: unknown column(s) {', '.join(hints)}; allowed: "
            f"{', '.join(MANIFEST_COLUMNS)} (slide_path may be called image_path)"
        )
    missing = [c for c in MANIFEST_COLUMNS if c not in table.columns]
    if missing:
        raise SlideManifestError(
            f"{MANIFEST_KEY} lacks column(s) {', '.join(missing)}; needs "
            f"{', '.join(MANIFEST_COLUMNS)}"
        )
    rows = []
    for line, entry in enumerate(table.to_dict("records"), start=2):
        slide = entry["slide_path"].strip()
        resolved = Path(slide).expanduser()
        resolved = resolved if resolved.is_absolute() else manifest.parent / resolved
        mpp, problem = _manifest_mpp(entry["microns_per_pixel"].strip(), line)
        rows.append([str(resolved.resolve()) if slide else None, mpp, problem])
    return pd.DataFrame(rows, columns=columns)


def _manifest_mpp(text: str, line: int) -> tuple[float, str | None]:
    low, high = metadata.PLAUSIBLE_MPP
    try:
        value = float(text)
    except ValueError:
        return np.nan, f"{MANIFEST_KEY} line {line}: microns_per_pixel is not a number"
    if not low <= value <= high:
        return np.nan, (
            f"{MANIFEST_KEY} line {line}: microns_per_pixel {value:g} is outside "
            f"{low:g}-{high:g} um/px"
        )
    return value, None


def apply_slide_manifest(records: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    """Records with the manifest's `microns_per_pixel` per slide; a slide whose manifest row
    is invalid is quarantined (`invalid_mpp`). Rows naming no discovered file are counted."""
    records = records.copy()
    records["microns_per_pixel"] = np.nan
    if manifest.empty:
        return records
    resolved = records["image_path"].map(
        lambda p: str(Path(p).resolve()) if isinstance(p, str) else None
    )
    by_path = manifest.dropna(subset=["image_path"]).drop_duplicates("image_path", keep="last")
    by_path = by_path.set_index("image_path")
    matched = resolved.isin(by_path.index)
    for index in records.index[matched]:
        row = by_path.loc[resolved[index]]
        if isinstance(row["problem"], str):
            records.loc[index, ["problem_check", "problem"]] = ["invalid_mpp", row["problem"]]
        else:
            records.at[index, "microns_per_pixel"] = float(row["microns_per_pixel"])
    unmatched = len(manifest) - int(manifest["image_path"].isin(set(resolved.dropna())).sum())
    if unmatched:
        logger.warning(
            "Predict: %d row(s) of %s name no file under predict.input (ignored)",
            unmatched,
            MANIFEST_KEY,
        )
    return records


# --- checks --------------------------------------------------------------------------------------


def validate_slide_inputs(
    records: pd.DataFrame,
    *,
    patch_size: int,
    stride: int,
    settings: SlideSettings,
    min_tissue_fraction: float,
    min_saturation: int = MIN_SATURATION,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`validate_inputs` for slides: the cohort's slide checks (`slides.checks.validate_slides`);
    a manifest's `microns_per_pixel` wins over the fallback, and `mpp_source` says which."""
    records = records.copy()
    records["patient_id"] = records["patient_id"].where(records["patient_id"].notna(), _NO_PATIENT)
    if "microns_per_pixel" not in records.columns:
        records["microns_per_pixel"] = None
    valid, quarantine = checks.validate_slides(
        records,
        label_map={},
        allowed_labels=(UNLABELLED,),
        patch_size=patch_size,
        target_mpp=settings.target_mpp,
        min_tissue_fraction=min_tissue_fraction,
        min_saturation=min_saturation,
        stride=stride,
        fallback_mpp=settings.fallback_mpp,
    )
    valid["patient_id"] = valid["patient_id"].where(valid["patient_id"] != _NO_PATIENT, None)
    return valid, quarantine


def find_inputs(
    params: Mapping[str, Any],
    source: Mapping[str, Any],
    checks: Mapping[str, Any],
    config: PreprocessConfig | Mapping[str, Any] | None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Valid images and slides under `predict.input` (INPUT_COLUMNS, pseudonyms), the
    quarantine report of both (no raw id or path in it) and the local linkage table.

    Images and slides alike are checked with the TRAINING run's saved preprocessing (patch
    size, glass threshold, slide geometry), never today's `patches`.
    """
    config = PreprocessConfig.from_dict(config or {})
    regex = None
    if params.get("patient_ids", True):
        regex = params.get("patient_id_regex") or source.get("patient_id_regex")
    records = discover_inputs(
        params["input"],
        regex,
        patient_from=source.get("patient_from") or "filename",
        allow_outside_root=bool(source.get("allow_outside_root", False)),
    )
    slide_row = mark_slides(records)
    records = apply_slide_manifest(records, read_slide_manifest(params.get("slide_manifest")))
    images, image_problems = predict.validate_inputs(
        records[~slide_row],
        min_side=config.patch_size,
        min_tissue_fraction=checks["min_tissue_fraction"],
        min_saturation=config.min_saturation,
        tiff_page=source.get("tiff_page", 0),
    )
    frames, problems = [images.assign(kind=IMAGE)], [image_problems]
    if slide_row.any():
        settings = SlideSettings.from_config(config, fallback_mpp=source.get("microns_per_pixel"))
        valid_slides, slide_problems = validate_slide_inputs(
            records[slide_row],
            patch_size=config.patch_size,
            stride=config.stride,
            settings=settings,
            min_tissue_fraction=config.lowest_tissue_fraction,
            min_saturation=config.min_saturation,
        )
        frames.append(valid_slides.assign(kind=SLIDE))
        problems.append(slide_problems)
    valid = _concat(frames)
    quarantine = _concat(problems)
    for column in ("microns_per_pixel", "mpp_source"):
        if column not in valid.columns:
            valid[column] = None
    key = pseudonym_key()
    valid = pseudonymise_records(valid, key)
    report, _ = hide_quarantine(quarantine, records, key)
    linkage = valid[["image", "patient", "patient_id", "relative_path", "image_path"]].assign(
        image_path=lambda t: t["image_path"].map(ingest.display_text)
    )
    kinds = valid["kind"].value_counts()
    logger.info(
        "Predict: %d valid image(s), %d valid slide(s), %d file(s) quarantined%s",
        int(kinds.get(IMAGE, 0)),
        int(kinds.get(SLIDE, 0)),
        len(quarantine),
        " -> data/08_reporting/predict_quarantine.csv" if len(quarantine) else "",
    )
    if valid.empty:
        logger.warning("Predict: no usable image or slide under predict.input")
    return valid[INPUT_COLUMNS].reset_index(drop=True), report, linkage.reset_index(drop=True)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)


# --- one slide, streamed -------------------------------------------------------------------------


def candidate_batches(
    path: str, found: slide_preprocess.SlideTiles, tiles: pd.DataFrame, batch_size: int
) -> Iterator[wsi_tiles.PatchBatch]:
    """Raw candidate patches of one slide, `batch_size` at a time (the slide is opened once)."""
    if tiles.empty:
        return
    with readers.open_slide(path) as slide:
        yield from wsi_tiles.iter_patches(slide, found.tissue.plan, iter([tiles]), batch_size)


def _classify_stream(
    path: str,
    found: slide_preprocess.SlideTiles,
    tiles: pd.DataFrame,
    models: Sequence[TaskModel],
    preprocessor: Preprocessor,
    batch_size: int,
    classify: np.ndarray | None = None,
) -> tuple[pd.DataFrame, np.ndarray | None, list[np.ndarray]]:
    """Cut -> normalise -> gate -> classify, one batch at a time, keeping numbers only.

    `classify`: which tiles to classify (in `tiles` order, by position); None: those that
    pass UNet gating (all without gating). Returns the tiles in read order with a `row`
    (their index in `tiles`), dermis fraction per tile (None without gating) and per model
    the probabilities (NaN where not classified).
    """
    transform = slide_preprocess.stain_map(preprocessor, found.tissue)
    gating = preprocessor.config.use_segmentation and preprocessor.unet is not None
    wanted = tiles.assign(row=np.arange(len(tiles)))
    read, dermis = [], []
    probabilities: list[list[np.ndarray]] = [[] for _ in models]
    for batch in candidate_batches(path, found, wanted, batch_size):
        normalised = transform(batch.images)
        rows = batch.tiles["row"].to_numpy()
        fraction = preprocessor.dermis_fraction(normalised) if gating else None
        if classify is not None:
            chosen = classify[rows]
        elif fraction is not None:
            chosen = fraction >= preprocessor.config.min_dermis_fraction
        else:
            chosen = np.ones(len(rows), bool)
        for index, model in enumerate(models):
            p = np.full((len(rows), len(model.class_names)), np.nan)
            if chosen.any():
                p[chosen] = model.probabilities(normalised[chosen])
            probabilities[index].append(p)
        read.append(batch.tiles)
        if fraction is not None:
            dermis.append(np.asarray(fraction, float))
    table = pd.concat(read, ignore_index=True) if read else wanted.iloc[:0]
    order = np.argsort(table["row"].to_numpy(), kind="stable")
    table = table.iloc[order].reset_index(drop=True)
    dermis_all = np.concatenate(dermis)[order] if dermis else None
    per_model = [
        np.concatenate(p)[order] if p else np.zeros((0, len(m.class_names)))
        for p, m in zip(probabilities, models, strict=True)
    ]
    return table, dermis_all, per_model


def predict_slide(
    path: str,
    name: str,
    models: Sequence[TaskModel],
    preprocessor: Preprocessor,
    settings: SlideSettings,
    low_confidence_threshold: float,
    manifest_mpp: float | None = None,
) -> tuple[list[dict[str, Any]], outputs.SlideResult]:
    """One slide -> one row per task and its `SlideResult`; candidate patches are streamed in
    `settings.batch_size` batches and never held together."""
    config = preprocessor.config
    found = slide_preprocess.slide_tiles(path, config, settings, manifest_mpp)
    candidates, _ = candidate_patches(found.table["tissue_fraction"].to_numpy(), config)
    tiles = found.table[candidates].reset_index(drop=True)
    table, dermis, probabilities = _classify_stream(
        path, found, tiles, models, preprocessor, settings.batch_size
    )
    used, selection = choose_patches(table["tissue_fraction"].to_numpy(), dermis, config)
    missing = used & np.isnan(probabilities[0][:, 0]) if len(table) else used
    if missing.any():  # gating removed every tile: the fallback classifies them all
        table, dermis, probabilities = _classify_stream(
            path, found, tiles, models, preprocessor, settings.batch_size, missing
        )
    for p in probabilities:
        p[~used] = np.nan  # a tile is scored only where the rule uses it
    result_tiles = table[wsi_tiles.TILE_COLUMNS].assign(
        dermis_fraction=dermis if dermis is not None else np.nan, scored=used
    )
    rows, calls = [], {}
    for model, p in zip(models, probabilities, strict=True):
        for index, class_name in enumerate(model.class_names):
            result_tiles[outputs.task_column(model.task, class_name)] = p[:, index]
        summary = serving.summarise(p[used], model.class_names, low_confidence_threshold, selection)
        calls[model.task] = summary
        rows.append(
            {
                "level": "image",
                "kind": SLIDE,
                "image": name,
                "task": model.task,
                "architecture": model.architecture,
                "runtime": model.runtime,
                **summary,
                "n_tissue_patches": len(found.table),
                "n_images": 1,
            }
        )
    plan = found.tissue.plan
    result = outputs.SlideResult(
        name=name,
        tiles=result_tiles,
        thumbnail=found.tissue.thumbnail,
        mask=found.tissue.mask,
        downsample=plan.thumbnail_downsample,
        microns_per_pixel=plan.target_mpp * plan.patch_size / plan.tile_size0,
        tasks={m.task: tuple(m.class_names) for m in models},
        calls=calls,
    )
    logger.info(
        "Predict: slide %s, %d tile(s) classified of %d tissue tile(s) (%s)",
        name,
        int(used.sum()),
        len(found.table),
        selection,
    )
    return rows, result


def predict_slides(
    slide_table: pd.DataFrame, setup: PredictSetup
) -> tuple[pd.DataFrame, dict[str, outputs.SlideResult]]:
    """One row per slide and task (`kind` slide, level image) and each slide's result.

    A slide that fails mid-read is left out with a warning naming its pseudonym.
    """
    rows, results = [], {}
    for record in slide_table.to_dict("records"):
        mpp = record.get("microns_per_pixel")
        try:
            slide_rows, result = predict_slide(
                record["image_path"],
                record["image"],
                setup.models,
                setup.preprocessor,
                setup.slide_settings,
                setup.low_confidence_threshold,
                float(mpp) if mpp is not None and np.isfinite(mpp) else None,
            )
        except ImageProblem as problem:
            logger.warning(
                "Predict: slide %s left out (%s: %s)",
                record["image"],
                problem.check,
                problem.reason,
            )
            continue
        extra = {k: record.get(k) for k in ("patient", "microns_per_pixel", "mpp_source")}
        rows += [{**row, **extra} for row in slide_rows]
        results[record["image"]] = result
    table = predict.order_columns(pd.DataFrame(rows), setup.models)
    return with_kind(table, rows), results


# --- images and slides together ------------------------------------------------------------------


def predict_all(
    inputs: pd.DataFrame, setup: PredictSetup
) -> tuple[pd.DataFrame, dict[str, outputs.SlideResult]]:
    """Per image or slide and task: probabilities, label, patch counts, selection and
    confidence flags (`kind` image | slide); then per patient (the mean over all of its
    classified patches) where file names carry patient ids; and each slide's result."""
    kinds = inputs["kind"] if "kind" in inputs.columns else pd.Series(IMAGE, inputs.index)
    plain, slide_table = inputs[kinds != SLIDE], inputs[kinds == SLIDE]
    by_image = with_kind(
        predict.predict_images(
            plain,
            setup.models,
            setup.preprocessor,
            setup.low_confidence_threshold,
            setup.tiff_page,
            setup.engine,
            setup.work,
        )
    )
    results: dict[str, outputs.SlideResult] = {}
    if len(slide_table):
        by_slide, results = predict_slides(slide_table, setup)
        by_image = pd.concat(
            [t for t in (by_image, by_slide) if len(t)] or [by_image], ignore_index=True
        )
    by_patient = patient_kinds(
        predict.patient_means(by_image, setup.models, setup.low_confidence_threshold), by_image
    )
    per_image = by_image.drop_duplicates("image") if len(by_image) else by_image
    counts = selection_counts(per_image["selection"]) if len(per_image) else {}
    logger.info(
        "Predict: %d image(s) and %d slide(s) x %d task(s); %d row(s) low-confidence; "
        "by patch selection: %s",
        len(plain),
        len(slide_table),
        len(setup.models),
        int(by_image["low_confidence"].sum()) if len(by_image) else 0,
        ", ".join(f"{k}={v}" for k, v in counts.items()) or "none",
    )
    return pd.concat([by_image, by_patient], ignore_index=True), results


def patient_kinds(by_patient: pd.DataFrame, by_image: pd.DataFrame) -> pd.DataFrame:
    """Patient rows' `kind`: what they average (image, slide, or image+slide)."""
    kinds = (
        by_image.dropna(subset=["patient"])
        .groupby("patient")["kind"]
        .agg(lambda k: "+".join(sorted(set(k))))
        if len(by_image)
        else pd.Series()
    )
    table = with_kind(by_patient)
    table["kind"] = table["patient"].map(kinds).astype(object)
    return table


def with_kind(
    table: pd.DataFrame, rows: list[dict[str, Any]] | None = None, kind: str = IMAGE
) -> pd.DataFrame:
    """`order_columns`' table with a `kind` column (image | slide) after `level`."""
    kinds = [row.get("kind", kind) for row in rows] if rows is not None else [kind] * len(table)
    table = table.drop(columns=["kind"], errors="ignore")
    table.insert(1, "kind", pd.Series(kinds, index=table.index, dtype=object))
    return table
