"""Finding slides: a `slide_folder` tree or a `slide_manifest` CSV; no Kedro here.

Multi-file slides count once: a MIRAX `.mrxs` has a data folder of the same name beside it, a
Hamamatsu `.vms`/`.vmu` lists its image files, and a folder of `.dcm` files is one DICOM slide
(one file per level) named by its folder. Every other file comes back as a record with a
problem, so it shows in the quarantine table.
"""

from __future__ import annotations

import configparser
import logging
import os
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ssc_skin.cohort.checks import RECORD_COLUMNS, frame, text
from ssc_skin.cohort.config import (
    DEFAULT_PATIENT_ID_REGEX,
    CohortConfigError,
    compile_patient_regex,
)
from ssc_skin.cohort.sources import (  # not yet public there: walk, is_junk, record, resolve
    _OUTSIDE_ROOT,
    MANIFEST_REQUIRED,
    _is_junk,
    _record,
    _resolve,
    _walk,
    manifest_file,
)
from ssc_skin.slides.metadata import positive_float
from ssc_skin.slides.readers import SLIDE_EXTENSIONS

logger = logging.getLogger(__name__)

SLIDE_RECORD_COLUMNS = [*RECORD_COLUMNS, "microns_per_pixel"]
MANIFEST_SLIDE_OPTIONAL = ("split", "microns_per_pixel")


def discover_slide_folder(
    root: str | os.PathLike[str],
    patient_id_regex: str = DEFAULT_PATIENT_ID_REGEX,
    *,
    allow_outside_root: bool = False,
) -> pd.DataFrame:
    """Records of `<root>/<label>/**/<slide>` (SLIDE_RECORD_COLUMNS), sorted by path.

    Multi-file slides count once: a MIRAX data folder and the files a .vms lists are parts
    of their slide, and a folder of .dcm files is one DICOM slide named by its folder. Other
    files come back with `problem` set, so they show in the quarantine table. Links leading
    out of the folder are `outside_root` (never read) unless `allow_outside_root`, as for
    images (`ingest._walk`).
    """
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise CohortConfigError(f"cohort.source.root is not a folder ({root_path.name})")
    pattern = compile_patient_regex(patient_id_regex)
    walked = [
        (path, outside)
        for path, outside in _walk(root_path, allow_outside_root)
        if not _is_junk(path.name)
    ]
    files = [path for path, outside in walked if not outside]
    parts = _companion_files(files)
    dicom: dict[Path, list[Path]] = defaultdict(list)
    rows = []
    for path, outside in walked:
        if outside:
            row = _folder_record(root_path, path, path, pattern)
            row.update(image_path=None, problem_check="outside_root", problem=_OUTSIDE_ROOT)
            rows.append(row)
            continue
        if path in parts:
            continue
        if path.suffix.lower() == ".dcm":
            dicom[path.parent].append(path)
            continue
        rows.append(_folder_record(root_path, path, path, pattern))
    for folder, members in dicom.items():
        rows.append(_folder_record(root_path, sorted(members)[0], folder, pattern))
    if parts:
        logger.debug("%d file(s) read as parts of multi-file slides", len(parts))
    return _slide_frame(rows)


def _folder_record(root: Path, path: Path, named: Path, pattern: Any) -> dict[str, Any]:
    """A folder-layout record; `named` is the file (or DICOM folder) the slide is known by."""
    relative = named.relative_to(root).as_posix()
    folders = relative.split("/")[:-1]
    match = pattern.search(named.name)
    row = _record(
        str(path),
        relative,
        raw_label=folders[0] if folders else None,
        patient_id=match.group("patient") if match else None,
    )
    row["microns_per_pixel"] = None
    if path.suffix.lower() not in SLIDE_EXTENSIONS:
        row.update(
            problem_check="not_image_extension",
            problem=f"not a slide file extension ({path.suffix or 'none'}); allowed: "
            + ", ".join(sorted(SLIDE_EXTENSIONS)),
        )
    elif not folders:
        row.update(
            problem_check="no_label_folder",
            problem="not inside a label folder (<root>/<label>/...)",
        )
    elif not row["patient_id"]:
        row.update(problem_check="no_patient_id", problem="no patient id in file name")
    return row


def _companion_files(files: list[Path]) -> set[Path]:
    """Files that belong to another slide: MIRAX data folders and the image files a .vms/.vmu
    lists (Hamamatsu), which OpenSlide reads through the main file."""
    parts: set[Path] = set()
    mirax = {path.with_suffix("") for path in files if path.suffix.lower() == ".mrxs"}
    for path in files:
        if any(folder in mirax for folder in path.parents):
            parts.add(path)
    for path in files:
        if path.suffix.lower() in (".vms", ".vmu"):
            parts.update(path.parent / name for name in _vms_members(path))
    return parts


def _vms_members(path: Path) -> list[str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError, OSError):
        return []
    section = "Virtual Microscope Specimen"
    if not parser.has_section(section):
        return []
    return [
        value.strip()
        for key, value in parser.items(section)
        if key.startswith(("imagefile", "mapfile", "optimisationfile")) and value.strip()
    ]


def read_slide_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Records of a manifest CSV whose rows are slides (a patient may have several).

    Columns: `image_path` (or `slide_path`), `patient_id`, `label`; optional `split` and
    `microns_per_pixel` (the slide's resolution where its metadata lacks one). Relative
    paths resolve against the manifest's folder.
    """
    manifest = manifest_file(path)
    with manifest.open(encoding="utf-8-sig") as handle:
        header = handle.readline()
    separator = max(",;\t", key=header.count)
    table = pd.read_csv(
        manifest, sep=separator, dtype=str, keep_default_na=False, encoding="utf-8-sig"
    )
    table.columns = [str(column).strip().lower() for column in table.columns]
    if "image_path" not in table.columns and "slide_path" in table.columns:
        table = table.rename(columns={"slide_path": "image_path"})
    missing = [column for column in MANIFEST_REQUIRED if column not in table.columns]
    if missing:
        raise ValueError(
            f"manifest {manifest} lacks required column(s) {', '.join(missing)}; "
            f"required: {', '.join(MANIFEST_REQUIRED)} (image_path may be called "
            f"slide_path), optional: {', '.join(MANIFEST_SLIDE_OPTIONAL)}; found: "
            f"{', '.join(table.columns)}"
        )
    rows = []
    for line, entry in enumerate(table.to_dict("records"), start=2):
        slide = text(entry["image_path"])
        split = text(entry.get("split"))
        slide_path, relative = (
            _resolve(slide, manifest.parent) if slide else (None, f"{manifest.name} line {line}")
        )
        row = _record(
            slide_path,
            relative,
            patient_id=text(entry["patient_id"]),
            raw_label=text(entry["label"]),
            split=split.lower() if split else None,
        )
        row["microns_per_pixel"] = None
        mpp_text = text(entry.get("microns_per_pixel"))
        if not slide:
            row.update(problem_check="missing_image_path", problem="missing slide path")
        elif Path(slide_path).suffix.lower() not in SLIDE_EXTENSIONS:
            row.update(
                problem_check="not_image_extension",
                problem=f"not a slide file extension ({Path(slide_path).suffix or 'none'}"
                "); allowed: " + ", ".join(sorted(SLIDE_EXTENSIONS)),
            )
        elif mpp_text is not None and positive_float(mpp_text) is None:
            row.update(
                problem_check="invalid_mpp",
                problem=f"microns_per_pixel {mpp_text!r} is not a positive number",
            )
        else:
            row["microns_per_pixel"] = positive_float(mpp_text)
        rows.append(row)
    return _slide_frame(rows)


def discover_slides(source: Mapping[str, Any]) -> pd.DataFrame:
    """Slide records of a `cohort.source` with layout `slide_folder` or `slide_manifest`."""
    layout = source.get("layout")
    if layout == "slide_folder":
        root = source.get("root")
        if not root:
            raise CohortConfigError("cohort.source.root must be a path when layout is slide_folder")
        return discover_slide_folder(
            root,
            source.get("patient_id_regex") or DEFAULT_PATIENT_ID_REGEX,
            allow_outside_root=bool(source.get("allow_outside_root")),
        )
    if layout == "slide_manifest":
        if not source.get("manifest"):
            raise CohortConfigError(
                "cohort.source.manifest must be a path when layout is slide_manifest"
            )
        return read_slide_manifest(source["manifest"])
    raise CohortConfigError(
        f"cohort.source.layout {layout!r} is not a slide layout (slide_folder | slide_manifest)"
    )


def _slide_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    table = frame(rows, SLIDE_RECORD_COLUMNS)
    table["microns_per_pixel"] = table["microns_per_pixel"].astype("float64")
    return table.sort_values("relative_path", kind="stable").reset_index(drop=True)
