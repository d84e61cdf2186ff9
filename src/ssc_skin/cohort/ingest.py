"""Read and validate a real image cohort before any training (no Kedro here).

Users point the project at their own skin-biopsy images by configuration alone, in one of two
layouts:

- ``folder``: ``<root>/<label>/**/<image>``; the patient id comes from a regex (named group
  ``patient``) searched in the file name, or (``patient_from: folder``) from the folder below
  the label folder, ``<root>/<label>/<patient>/**/<image>``.
- ``manifest``: a CSV (UTF-8) with ``image_path, patient_id, label`` and optional
  ``mask_path`` and ``split``; relative paths resolve against the manifest's folder.

Only files inside the cohort folder are read (the folder's own, or the manifest's folder, or
``root`` for a manifest): a symbolic link or a manifest path that leads outside it is
quarantined as ``outside_root`` unless ``allow_outside_root: true``.

Every file is checked, one at a time so memory stays flat, and each problem quarantines the file
with a reason a person can act on; the other files go on. The user's folder is read-only to the
project: nothing here writes, renames or deletes anything in it.

Patient ids are private: log lines carry counts only, never ids, paths or reasons. The
quarantine table returned here names files by their path (which may contain ids); the
pipeline pseudonymises it before writing (`privacy.hide_quarantine`). File names that are not
valid UTF-8 are shown with their odd bytes escaped (``caf\\xe9.png``) and read as they are.

Choices made here:

- Duplicates are found by a SHA-256 of the decoded pixels (and size), so the same image saved
  as PNG and as TIFF is caught; a JPEG re-encode is not pixel-identical and is not.
- Samples wider than 8 bits are scaled by the image's significant bits (PNG sBIT, TIFF
  MaxSampleValue, else the smallest of 8/10/12/14/16 bits that holds its maximum), so 12-bit
  data in a 16-bit file keeps its brightness (see `_to_uint8`).
- Every decoder (Pillow, tifffile, OpenCV) gets the image size from the header first; more
  than `MAX_IMAGE_PIXELS` pixels (Pillow's own bomb limit) or `MAX_DECODED_BYTES` of samples
  is quarantined as ``too_large`` before anything is decoded.
- A bad mask (missing, unreadable, wrong size) is quarantined on its own and the image goes on
  without a mask, with a note: the image is still fine for classification.
- Hidden files and folders, Thumbs.db and desktop.ini are skipped silently; any other file
  without an image extension is listed in the quarantine table, so nothing vanishes unseen.
- A grayscale image is converted to RGB; the tissue check then finds tissue by darkness.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import tifffile
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ssc_skin.constants import MASK_CLASSES, SPLITS
from ssc_skin.imaging.tissue import tissue_mask

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
# Pillow's format names; MPO is what Pillow calls a camera JPEG that holds extra frames.
IMAGE_FORMATS = frozenset({"PNG", "JPEG", "MPO", "TIFF", "BMP"})
LAYOUTS = (
    "folder",
    "manifest",
    "synthetic",
    "slide_folder",
    "slide_manifest",
)  # slide_*: cohort/slides.py
DEFAULT_PATIENT_ID_REGEX = r"^(?P<patient>[A-Za-z0-9]+)"
PATIENT_FROM = ("filename", "folder")
SOURCE_KEYS = (
    "layout",
    "root",
    "manifest",
    "patient_id_regex",
    "patient_from",
    "label_map",
    "tiff_page",
    "microns_per_pixel",
    "allow_outside_root",
)
# Decompression limits, checked from the header before any decoder runs: Pillow's own bomb
# limit (~89.5 million pixels) and 1 GiB of decoded samples (a float TIFF is 4-8 bytes each).
MAX_IMAGE_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)
MAX_DECODED_BYTES = 1 << 30
MANIFEST_REQUIRED = ("image_path", "patient_id", "label")
MANIFEST_OPTIONAL = ("mask_path", "split")
# Operating-system and tool litter, skipped silently (counted in a debug log line).
JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})

RECORD_COLUMNS = [
    "image_path",
    "relative_path",
    "patient_id",
    "raw_label",
    "mask_path",
    "mask_relative_path",
    "split",
    "problem_check",
    "problem",
    "mask_problem",
]
VALID_COLUMNS = [
    "image_path",
    "relative_path",
    "patient_id",
    "raw_label",
    "label",
    "mask_path",
    "split",
    "content_hash",
    "height",
    "width",
    "tissue_fraction",
    "notes",
]
QUARANTINE_COLUMNS = ["file", "check", "reason"]
_NUMERIC = {"height": "int64", "width": "int64", "tissue_fraction": "float64"}
_EXIF_ORIENTATION = 0x0112
_TIFF_BITS_PER_SAMPLE = 258
_TIFF_MAX_SAMPLE_VALUE = 281
_WIDTHS = (8, 10, 12, 14, 16)
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class CohortConfigError(ValueError):
    """A cohort setting is wrong; the message names the key and what is allowed."""


class ImageProblem(Exception):
    """A file that cannot be used; `check` is a stable code, the message says why."""

    def __init__(self, check: str, reason: str) -> None:
        super().__init__(check, reason)  # both in args, so that it pickles across processes
        self.check = check
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


# --- configuration -----------------------------------------------------------------------------


def check_source_config(source: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate `cohort.source` and fill defaults, so a typo fails before any file is read.

    Every problem is named in one message (one line per key), not only the first.
    """
    problems = source_config_problems(source)
    if problems:
        raise CohortConfigError("; ".join(problems))
    source = source or {}
    return {
        "layout": source.get("layout", "synthetic"),
        "root": source.get("root"),
        "manifest": source.get("manifest"),
        "patient_id_regex": source.get("patient_id_regex") or DEFAULT_PATIENT_ID_REGEX,
        "patient_from": source.get("patient_from") or "filename",
        "label_map": dict(source.get("label_map") or {}),
        "tiff_page": source.get("tiff_page", 0),
        "microns_per_pixel": _positive_or_none(
            source.get("microns_per_pixel"), "cohort.source.microns_per_pixel"
        ),
        "allow_outside_root": bool(source.get("allow_outside_root", False)),
    }


def source_config_problems(source: Mapping[str, Any] | None) -> list[str]:
    """Each problem of `cohort.source`, one message per key that names it."""
    source = {} if source is None else source
    if not isinstance(source, Mapping):
        return [f"cohort.source must be a mapping; got {type(source).__name__}"]
    problems = []
    unknown = sorted(set(source) - set(SOURCE_KEYS))
    if unknown:
        problems.append(
            f"cohort.source has unknown key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(SOURCE_KEYS)}"
        )
    layout = source.get("layout", "synthetic")
    if layout not in LAYOUTS:
        problems.append(f"cohort.source.layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    required = {"folder": "root", "manifest": "manifest"}.get(layout)
    if required and not _is_path(source.get(required)):
        problems.append(
            f"cohort.source.{required} must be a path when layout is {layout}; "
            f"got {source.get(required)!r}"
        )
    if layout == "manifest" and source.get("root") is not None and not _is_path(source.get("root")):
        problems.append(
            "cohort.source.root must be a path or null (for a manifest: the folder "
            f"its paths must stay inside); got {source.get('root')!r}"
        )
    try:
        compile_patient_regex(source.get("patient_id_regex") or DEFAULT_PATIENT_ID_REGEX)
    except CohortConfigError as error:
        problems.append(str(error))
    patient_from = source.get("patient_from") or "filename"
    if patient_from not in PATIENT_FROM:
        problems.append(
            f"cohort.source.patient_from must be one of {', '.join(PATIENT_FROM)}; "
            f"got {patient_from!r}"
        )
    label_map = source.get("label_map") or {}
    if not isinstance(label_map, Mapping) or not all(
        isinstance(k, str) and k.strip() and isinstance(v, str) for k, v in label_map.items()
    ):
        problems.append(
            "cohort.source.label_map must map raw label names to canonical "
            f"label names (text to text); got {label_map!r}"
        )
    tiff_page = source.get("tiff_page", 0)
    if isinstance(tiff_page, bool) or not isinstance(tiff_page, int) or tiff_page < 0:
        problems.append(
            f"cohort.source.tiff_page must be an integer >= 0 (0 = first page); got {tiff_page!r}"
        )
    try:
        _positive_or_none(source.get("microns_per_pixel"), "cohort.source.microns_per_pixel")
    except CohortConfigError as error:
        problems.append(str(error))
    if not isinstance(source.get("allow_outside_root", False), bool):
        problems.append(
            "cohort.source.allow_outside_root must be true or false; got "
            f"{source.get('allow_outside_root')!r}"
        )
    return problems


def _is_path(value: Any) -> bool:
    return isinstance(value, str | os.PathLike) and bool(str(value).strip())


def _positive_or_none(value: Any, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise CohortConfigError(
            f"{key} must be a positive number (microns per pixel) or null; got {value!r}"
        )
    return float(value)


def compile_patient_regex(regex: str) -> re.Pattern[str]:
    """Compile the file-name regex; it must have a named group `patient`."""
    try:
        pattern = re.compile(regex)
    except (re.error, TypeError) as error:
        raise CohortConfigError(
            f"cohort.source.patient_id_regex does not compile ({error}); got {regex!r}"
        ) from error
    if "patient" not in pattern.groupindex:
        raise CohortConfigError(
            "cohort.source.patient_id_regex must have a named group "
            f"'patient', e.g. {DEFAULT_PATIENT_ID_REGEX}; got {regex!r}"
        )
    return pattern


def check_labels(label_map: Mapping[str, str], allowed_labels: list[str] | tuple[str, ...]) -> None:
    """Every label-map target must be a canonical label, else every image would be unknown."""
    if not allowed_labels:
        raise CohortConfigError("the allowed (canonical) labels must not be empty")
    allowed = ", ".join(sorted(allowed_labels))
    for raw, canonical in label_map.items():
        if canonical not in allowed_labels:
            raise CohortConfigError(
                f"cohort.source.label_map maps {raw!r} to {canonical!r}, "
                f"which is not one of the allowed labels: {allowed}"
            )


# --- discovery ---------------------------------------------------------------------------------


def discover_cohort(source: Mapping[str, Any]) -> pd.DataFrame:
    """The records (one row per file) of the configured layout."""
    config = check_source_config(source)
    if config["layout"] == "folder":
        return discover_folder(
            config["root"],
            config["patient_id_regex"],
            patient_from=config["patient_from"],
            allow_outside_root=config["allow_outside_root"],
        )
    if config["layout"] == "manifest":
        return read_manifest(
            config["manifest"], root=config["root"], allow_outside_root=config["allow_outside_root"]
        )
    raise CohortConfigError("cohort.source.layout 'synthetic' has no files to discover")


def discover_folder(
    root: str | os.PathLike[str],
    patient_id_regex: str = DEFAULT_PATIENT_ID_REGEX,
    *,
    patient_from: str = "filename",
    allow_outside_root: bool = False,
    label_folders: bool = True,
) -> pd.DataFrame:
    """Records of `<root>/<label>/**/<file>`, sorted by path.

    Files with no image extension, outside a label folder or without a patient id come back
    with `problem` set, so that they show in the quarantine table; so do links that lead
    outside `root` (not followed unless `allow_outside_root`). `patient_from="folder"` takes
    the patient from the folder below the label folder (the first folder without labels).
    """
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise CohortConfigError(f"cohort.source.root is not a folder: {root_path.name or root}")
    pattern = compile_patient_regex(patient_id_regex)
    rows, ignored = [], 0
    for path, outside in _walk(root_path, allow_outside_root):
        relative = display_text(path.relative_to(root_path).as_posix())
        if _is_junk(path.name):
            ignored += 1
            continue
        folders = relative.split("/")[:-1]
        row = _record(
            str(path),
            relative,
            raw_label=folders[0] if folders else None,
            patient_id=_patient_id(
                path.name, folders[1 if label_folders else 0 :], pattern, patient_from
            ),
        )
        if outside:
            row.update(problem_check="outside_root", problem=_OUTSIDE_ROOT)
        elif path.suffix.lower() not in IMAGE_EXTENSIONS:
            row.update(
                problem_check="not_image_extension",
                problem=f"not an image extension ({display_text(path.suffix) or 'none'}"
                "); allowed: " + ", ".join(sorted(IMAGE_EXTENSIONS)),
            )
        elif label_folders and not folders:
            row.update(
                problem_check="no_label_folder",
                problem="not inside a label folder (<root>/<label>/...)",
            )
        elif not row["patient_id"]:
            row.update(
                problem_check="no_patient_id",
                problem="not inside a patient folder (<root>/<label>/<patient>/...)"
                if patient_from == "folder"
                else "no patient id in file name",
            )
        rows.append(row)
    if ignored:
        logger.debug("Skipped %d hidden or system files", ignored)
    if patient_from == "filename":
        _hint_patient_folders(rows, 1 if label_folders else 0)
    return _records_frame(rows)


def _hint_patient_folders(rows: list[dict[str, Any]], depth: int) -> None:
    """Warn (counts only) when ids read from file names repeat across subfolders: the
    layout is likely <label>/<patient>/<file>, whose file names are not patient ids."""
    folders: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        parts = row["relative_path"].split("/")[:-1]
        if row["patient_id"] and len(parts) > depth:
            folders[row["patient_id"]].add("/".join(parts[: depth + 1]))
    spread = sum(len(found) > 1 for found in folders.values())
    if spread:
        logger.warning(
            "%d patient id(s) read from file names occur in more than one subfolder;"
            " if each subfolder is a patient (<root>/<label>/<patient>/...), set "
            "cohort.source.patient_from: folder",
            spread,
        )


_OUTSIDE_ROOT = (
    "leads outside the cohort folder (a symbolic link or a path with ../ or an "
    "absolute path): not read; copy the file into the folder, or set "
    "cohort.source.allow_outside_root: true to follow it"
)


def _patient_id(
    name: str, folders: list[str], pattern: re.Pattern[str], patient_from: str
) -> str | None:
    """The patient of a file: from its name (regex) or from its first folder."""
    if patient_from == "folder":
        return folders[0] if folders else None
    match = pattern.search(display_text(name))
    return match.group("patient") if match else None


def display_text(text: str) -> str:
    """A file name as printable UTF-8: bytes that are not UTF-8 are escaped (``\\xe9``).

    On POSIX, Python keeps such bytes as lone surrogates, which cannot be written to a CSV
    or hashed as UTF-8; the escaped form is stable, so pseudonyms stay stable too.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    return text


def path_exists(path: Path, key: str, kind: str) -> bool:
    """Whether `path` is a file (kind "file") or folder; a path the OS cannot even look up
    (too long, a NUL byte) is one CohortConfigError naming `key`, never the path itself."""
    try:
        return path.is_file() if kind == "file" else path.is_dir()
    except (OSError, ValueError) as error:
        reason = (
            f"is longer than this system allows ({len(str(path))} characters)"
            if getattr(error, "errno", None) == errno.ENAMETOOLONG
            else f"cannot be looked up ({type(error).__name__}"
            f"{f' errno {error.errno}' if getattr(error, 'errno', None) else ''})"
        )
        raise CohortConfigError(f"{key} {reason}; use a shorter path") from None


def read_manifest(
    path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    allow_outside_root: bool = False,
) -> pd.DataFrame:
    """Records of a manifest CSV (comma, semicolon or tab separated, UTF-8), in the same columns.

    Relative paths resolve against the manifest's folder; backslashes count as separators so
    that a manifest written on Windows works elsewhere. Paths must stay inside `root` (the
    manifest's folder by default) unless `allow_outside_root`.
    """
    manifest = Path(path).expanduser()
    if not path_exists(manifest, "cohort.source.manifest", "file"):
        key = f"cohort.source.manifest ({display_text(manifest.name)})"
        raise CohortConfigError(f"{key} is not a file")
    key = f"cohort.source.manifest ({display_text(manifest.name)})"
    table = _manifest_table(manifest, key)
    table.columns = [str(column).strip().lower() for column in table.columns]
    missing = [column for column in MANIFEST_REQUIRED if column not in table.columns]
    if missing:
        raise CohortConfigError(
            f"{key} lacks required column(s) {', '.join(missing)}; "
            f"required: {', '.join(MANIFEST_REQUIRED)}, optional: "
            f"{', '.join(MANIFEST_OPTIONAL)}; found: "
            f"{', '.join(table.columns)}"
        )
    base = manifest.parent
    fence = (
        None if allow_outside_root else os.path.realpath(Path(root).expanduser() if root else base)
    )
    rows = []
    for line, entry in enumerate(table.to_dict("records"), start=2):
        image = _text(entry["image_path"])
        mask = _text(entry.get("mask_path"))
        split = _text(entry.get("split"))
        image_path, relative = (
            _resolve(image, base) if image else (None, f"{manifest.name} line {line}")
        )
        mask_path, mask_relative = _resolve(mask, base) if mask else (None, None)
        row = _record(
            image_path,
            relative,
            patient_id=_text(entry["patient_id"]),
            raw_label=_text(entry["label"]),
            mask_path=mask_path,
            mask_relative_path=mask_relative,
            split=split.lower() if split else None,
        )
        if not image:
            row.update(problem_check="missing_image_path", problem="missing image path")
        elif fence and not _inside(image_path, fence):
            row.update(problem_check="outside_root", problem=_OUTSIDE_ROOT)
        if mask and fence and not _inside(mask_path, fence):
            row.update(mask_problem=_OUTSIDE_ROOT)
        rows.append(row)
    return _records_frame(rows)


def _manifest_table(manifest: Path, key: str) -> pd.DataFrame:
    """The manifest as text cells; encodings and broken rows give one message naming it."""
    data = manifest.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff"))
        raise CohortConfigError(
            f"{key} is not UTF-8 text ({'UTF-16' if utf16 else 'another encoding'}: byte "
            f"0x{data[error.start]:02x} at position {error.start}); save it as CSV UTF-8 "
            "(e.g. Excel: Save As > CSV UTF-8)"
        ) from error
    header = text.split("\n", 1)[0]
    separator = max(",;\t", key=header.count)
    try:
        return pd.read_csv(io.StringIO(text), sep=separator, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as error:
        raise CohortConfigError(f"{key} is empty") from error
    except pd.errors.ParserError as error:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(error))
        where = (
            f"line {found.group(2)} has {found.group(3)} fields where the header has "
            f"{found.group(1)}"
            if found
            else f"cannot be parsed ({error})"
        )
        raise CohortConfigError(
            f"{key}: {where}; quote values that contain the separator {separator!r} "
            '(e.g. "SSc, late")'
        ) from error


def _walk(root: Path, allow_outside_root: bool) -> Iterator[tuple[Path, bool]]:
    """(file, leads outside root) under root in sorted order; hidden folders skipped.

    Links are followed only while they stay inside root (or everywhere with
    `allow_outside_root`); a link that leads out is yielded once, flagged, and not entered.
    Link loops are entered once.
    """
    fence = None if allow_outside_root else os.path.realpath(root)
    seen: set[str] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link loop
            subfolders.clear()
            continue
        seen.add(real)
        kept = []
        for name in sorted(subfolders):
            path = Path(folder) / name
            if _is_junk(name):
                continue
            if fence and path.is_symlink() and not _inside(path, fence):
                yield path, True
            else:
                kept.append(name)
        subfolders[:] = kept
        for name in sorted(files):
            path = Path(folder) / name
            if path.is_dir():
                continue
            yield path, bool(fence and path.is_symlink() and not _inside(path, fence))


def _walk_files(root: Path) -> Iterator[Path]:
    """Files under root in sorted order; follows folder links once, skips hidden folders."""
    for path, _ in _walk(root, allow_outside_root=True):
        yield path


def _inside(path: str | os.PathLike[str], fence: str) -> bool:
    """Whether the path, with every link resolved, lies inside the folder `fence` (real)."""
    real = os.path.realpath(path)
    return real == fence or real.startswith(fence.rstrip(os.sep) + os.sep)


def _is_junk(name: str) -> bool:
    return name.startswith(".") or name.lower() in JUNK_NAMES


def _resolve(value: str, base: Path) -> tuple[str, str]:
    """Absolute path and the path shown in reports (relative to base where possible)."""
    path = Path(value.replace("\\", "/")).expanduser()
    absolute = Path(os.path.normpath(path if path.is_absolute() else base / path))
    try:
        shown = absolute.relative_to(base).as_posix()
    except ValueError:
        shown = absolute.as_posix()
    return str(absolute), display_text(shown)


def _record(image_path: str | None, relative_path: str, **fields: Any) -> dict[str, Any]:
    row = dict.fromkeys(RECORD_COLUMNS)
    row.update(image_path=image_path, relative_path=relative_path, **fields)
    return row


def _records_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = _frame(rows, RECORD_COLUMNS)
    return frame.sort_values("relative_path", kind="stable").reset_index(drop=True)


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """Text columns stay `object` so that a missing value is None, not NaN."""
    return pd.DataFrame(
        {
            column: pd.Series([row[column] for row in rows], dtype=_NUMERIC.get(column, object))
            for column in columns
        },
        columns=columns,
    )


def _text(value: Any) -> str | None:
    """A stripped string, or None for missing, NaN and blank cells."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    value = str(value).strip()
    return value or None


# --- reading one file --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Depth:
    """How many bits a file's samples have: as stored, and as significant (if it says)."""

    stored: int = 8
    significant: int | None = None  # from PNG sBIT or TIFF MaxSampleValue
    source: str = ""


class _NeedsTifffile(ImageProblem):
    """Internal: a TIFF whose samples Pillow would cut to 8 bits; tifffile reads it whole."""

    def __init__(self) -> None:
        super().__init__("needs_tifffile", "wide TIFF samples")


def read_rgb(path: str | os.PathLike[str], tiff_page: int = 0) -> tuple[np.ndarray, list[str]]:
    """The image as uint8 HxWx3 RGB, fully decoded, and a note per conversion made.

    Raises ImageProblem when the file is missing, empty, not an image, truncated, corrupt or
    too large to decode safely (checked from the header, before decoding).
    """
    path = Path(path)
    try:
        return _decode(path, tiff_page, _pil_to_rgb)
    except _NeedsTifffile:
        pass
    except ImageProblem as problem:
        if problem.check != "not_an_image" or not _starts_with(path, _TIFF_MAGIC):
            raise
    return _read_tiff_with_tifffile(path, tiff_page)


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """A mask as uint8 HxW class indices (palette PNGs give their indices, not colours)."""
    mask, _ = _decode(Path(path), 0, _pil_to_indices)
    return mask


def check_encoded_image(data: bytes) -> tuple[int, int]:
    """(width, height) of an encoded image, read from its header only; raises ImageProblem
    when it is no image or larger than the decompression limits. Call it before handing
    bytes to a decoder that has no limit of its own (OpenCV's `imdecode`)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError as error:
        raise ImageProblem("too_large", f"image too large to decode safely ({error})") from error
    except Exception as error:
        raise ImageProblem("not_an_image", "not an image (format not recognised)") from error
    _check_size(width, height)
    return width, height


def _check_size(width: int, height: int, nbytes: int | None = None) -> None:
    """Decompression limits, from the header: pixels, and decoded bytes where known."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageProblem(
            "too_large",
            f"image too large to decode safely: {width}x{height} = "
            f"{width * height} pixels, limit {MAX_IMAGE_PIXELS} "
            "pixels (tile it, or use a slide cohort)",
        )
    if nbytes is not None and nbytes > MAX_DECODED_BYTES:
        raise ImageProblem(
            "too_large",
            f"image too large to decode safely: {nbytes} bytes of "
            f"samples, limit {MAX_DECODED_BYTES} bytes",
        )


@contextlib.contextmanager
def _strict_decoding() -> Iterator[None]:
    """Make Pillow raise on a truncated file instead of padding it with grey.

    The flag is process-wide and another library may have set it; it is forced off while
    decoding and put back afterwards.
    """
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageProblem("file_missing", "file missing")
    if not path.is_file():
        raise ImageProblem("not_a_file", "not a regular file")
    if path.stat().st_size == 0:
        raise ImageProblem("empty_file", "empty file (0 bytes)")


def _starts_with(path: Path, magics: tuple[bytes, ...]) -> bool:
    with path.open("rb") as handle:
        head = handle.read(8)
    return head.startswith(magics)


def _decode(
    path: Path, page: int, convert: Callable[[Image.Image, _Depth], tuple[np.ndarray, list[str]]]
) -> tuple[np.ndarray, list[str]]:
    """Open, check the format and size, pick the TIFF page, decode in full, apply EXIF
    orientation.

    Any failure inside Pillow is turned into an ImageProblem: a corrupt file can make a
    format plugin raise nearly anything. 16-bit colour PNGs are decoded by OpenCV, since
    Pillow keeps only their high byte; wide TIFFs go to tifffile (see `read_rgb`).
    """
    _check_file(path)
    notes: list[str] = []
    try:
        with _strict_decoding():
            png = _png_header(path) if _starts_with(path, (_PNG_MAGIC,)) else None
            if png is not None:
                with Image.open(path) as image:
                    image.verify()  # chunk checksums, which decoding alone does not check
            with Image.open(path) as source:
                if source.format not in IMAGE_FORMATS:
                    raise ImageProblem(
                        "unsupported_format",
                        f"unsupported image format {source.format}; allowed: "
                        + ", ".join(sorted(IMAGE_FORMATS - {"MPO"})),
                    )
                if source.format == "TIFF":
                    notes += _seek_tiff_page(source, page)
                _check_size(*source.size)
                depth = _pillow_depth(source, png)
                if convert is _pil_to_rgb and source.format == "TIFF" and depth.stored > 8:
                    raise _NeedsTifffile
                if (
                    convert is _pil_to_rgb
                    and png is not None
                    and png[2] == 16
                    and png[3] in (2, 4, 6)
                ):
                    array, converted = _png16_with_opencv(path, depth)
                    return array, notes + converted
                source.load()
                image = source
                orientation = source.getexif().get(_EXIF_ORIENTATION, 1)
                if orientation in range(2, 9):
                    image = ImageOps.exif_transpose(source)
                    notes.append(f"EXIF orientation {orientation} applied")
                array, converted = convert(image, depth)
    except ImageProblem:
        raise
    except UnidentifiedImageError as error:
        raise ImageProblem("not_an_image", "not an image (format not recognised)") from error
    except Image.DecompressionBombError as error:
        raise ImageProblem("too_large", f"image too large to decode safely ({error})") from error
    except PermissionError as error:
        raise ImageProblem("unreadable", f"cannot read file ({error.strerror})") from error
    except Exception as error:
        if "truncat" in str(error).lower():
            raise ImageProblem("truncated", "truncated image data (file cut short)") from error
        raise ImageProblem("corrupt", f"corrupt image data ({error})") from error
    return array, notes + converted


def _seek_tiff_page(image: Image.Image, page: int) -> list[str]:
    pages = getattr(image, "n_frames", 1)
    if page >= pages:
        raise ImageProblem(
            "tiff_page",
            f"TIFF page {page} requested but the file has {pages} page(s) (pages count from 0)",
        )
    if pages == 1:
        return []
    image.seek(page)
    return [f"multi-page TIFF: page {page} of {pages} used (pages count from 0)"]


def _png_header(path: Path) -> tuple[int, int, int, int, int | None]:
    """(width, height, bit depth, colour type, significant bits from sBIT) of a PNG.

    Reads chunk headers up to the first IDAT only (a few dozen bytes in practice).
    """
    width = height = depth = colour = 0
    significant = None
    with path.open("rb") as handle:
        handle.read(8)
        for _ in range(256):  # a bounded walk: chunk headers, not pixel data
            head = handle.read(8)
            if len(head) < 8:
                break
            length, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind in {b"IDAT", b"IEND"}:
                break
            data = handle.read(length) if kind in (b"IHDR", b"sBIT") and length < 64 else None
            if data is None:
                handle.seek(length, os.SEEK_CUR)
            elif kind == b"IHDR" and len(data) >= 10:
                width, height = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big")
                depth, colour = data[8], data[9]
            elif kind == b"sBIT" and data:
                colours = {0: 1, 2: 3, 3: 3, 4: 1, 6: 3}.get(colour, len(data))
                significant = max(data[:colours])
            handle.seek(4, os.SEEK_CUR)  # CRC
    return width, height, depth, colour, significant


def _pillow_depth(image: Image.Image, png: tuple[int, int, int, int, int | None] | None) -> _Depth:
    """Stored and significant bits per sample: Pillow hides both, so read the header."""
    if image.format == "TIFF":
        bits = image.tag_v2.get(_TIFF_BITS_PER_SAMPLE, 1)
        return _Depth(max(bits if isinstance(bits, tuple) else (bits,)))
    if png is not None and png[2] == 16:
        return _Depth(16, png[4] if png[4] and png[4] < 16 else None, "sBIT")
    return _Depth()


def _png16_with_opencv(path: Path, depth: _Depth) -> tuple[np.ndarray, list[str]]:
    """A 16-bit colour (or grey + alpha) PNG at full depth; size already checked."""
    array = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint16:
        raise ImageProblem("corrupt", "corrupt image data (16-bit PNG not decodable)")
    if array.ndim == 2:
        array = array[..., None]
    channels = array.shape[2]
    colour = array[..., [2, 1, 0]] if channels >= 3 else np.repeat(array[..., :1], 3, axis=2)
    rgb, notes = _to_uint8(np.ascontiguousarray(colour), depth)
    if channels in (2, 4):
        alpha = array[..., -1:].astype(np.float32) / 65535
        rgb = np.rint(rgb * alpha + 255 * (1 - alpha)).astype(np.uint8)
        notes.append(
            f"{'RGBA' if channels == 4 else 'LA'} -> RGB (transparency composited on white)"
        )
    elif channels == 1:
        notes.append("grayscale -> RGB")
    return rgb, notes


def _pil_to_rgb(image: Image.Image, depth: _Depth) -> tuple[np.ndarray, list[str]]:
    """Any Pillow mode to uint8 RGB, with a note per conversion."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        gray, notes = _to_uint8(np.asarray(image), depth)
        return np.repeat(gray[..., None], 3, axis=2), [*notes, "grayscale -> RGB"]
    notes: list[str] = []
    if mode == "RGB":
        return np.asarray(image), notes
    if mode in ("L", "1"):
        notes.append("grayscale -> RGB")
    elif mode == "P" and "transparency" not in image.info:
        notes.append("palette -> RGB")
    elif mode in ("RGBA", "LA", "PA", "P", "RGBa", "La"):
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA"))
        notes.append(
            f"{'palette' if mode in ('P', 'PA') else mode} -> RGB "
            "(transparency composited on white)"
        )
    else:
        notes.append(f"{mode} -> RGB")
    return np.asarray(image.convert("RGB")), notes


def _pil_to_indices(image: Image.Image, depth: _Depth) -> tuple[np.ndarray, list[str]]:
    """A single-channel mask as class indices; a colour mask is ambiguous and refused."""
    del depth  # class indices are never rescaled
    array = np.asarray(image)
    if image.mode == "RGB" and (array == array[..., :1]).all():
        array = array[..., 0]
    if array.ndim != 2:
        raise ImageProblem(
            "not_class_indices", f"mask must be single-channel class indices; got mode {image.mode}"
        )
    if array.dtype != np.uint8 and (array.min() < 0 or array.max() > 255):
        raise ImageProblem("not_class_indices", "mask values must be class indices 0..255")
    return array.astype(np.uint8), []


def _to_uint8(array: np.ndarray, depth: _Depth | None = None) -> tuple[np.ndarray, list[str]]:
    """Samples to uint8 by the file's bit depth (never per-image contrast stretching).

    Wide samples are scaled by 255 / (2^bits - 1), `bits` being the significant bits the
    header gives (PNG sBIT, TIFF MaxSampleValue) or else the smallest of 8, 10, 12, 14, 16
    that holds the image's maximum: a 12-bit camera's 0..4095 in a 16-bit file keeps its
    brightness (its high byte alone would be 0..15, black), while every image of the same bit
    depth shares one map, so stain colours stay comparable. A header that claims fewer bits
    than the values need is overruled by the values.
    """
    depth = depth or _Depth()
    if array.dtype == np.uint8:
        return array, []
    if array.dtype.kind == "b":
        return array.astype(np.uint8) * 255, []
    if array.dtype.kind in "ui" and array.size and array.min() >= 0:
        top = int(array.max())
        if top <= 255 and depth.stored <= 8:
            return array.astype(np.uint8), []
        if top <= 65535:
            bits, source = depth.significant, depth.source
            if not bits or top >= 1 << bits:
                bits = next(b for b in _WIDTHS if top < 1 << b)
                source = "maximum value"
            scaled = np.rint(array.astype(np.float32) * np.float32(255 / ((1 << bits) - 1)))
            stored = depth.stored if depth.stored > 8 else 16
            return np.clip(scaled, 0, 255).astype(np.uint8), [
                f"{stored}-bit -> 8-bit ({bits} significant bits, from its {source})"
            ]
    if (
        array.dtype.kind == "f"
        and np.isfinite(array).all()
        and array.min() >= 0
        and array.max() <= 1
    ):
        return np.rint(array * 255).astype(np.uint8), ["float -> 8-bit (x255)"]
    raise ImageProblem(
        "unsupported_pixels",
        f"unsupported sample values ({array.dtype}, not 8/16-bit or float 0..1)",
    )


def _read_tiff_with_tifffile(path: Path, page: int) -> tuple[np.ndarray, list[str]]:
    """TIFFs that Pillow cannot open (e.g. float samples) or would cut to 8 bits (16-bit):
    grey or RGB pages only, size checked from the page's tags before decoding."""
    notes = ["decoded with tifffile"]
    try:
        with tifffile.TiffFile(path) as tiff:
            if page >= len(tiff.pages):
                raise ImageProblem(
                    "tiff_page",
                    f"TIFF page {page} requested but the file has "
                    f"{len(tiff.pages)} page(s) (pages count from 0)",
                )
            if len(tiff.pages) > 1:
                notes.append(
                    f"multi-page TIFF: page {page} of {len(tiff.pages)} used (pages count from 0)"
                )
            tiff_page = tiff.pages[page]
            _check_size(tiff_page.imagewidth, tiff_page.imagelength, tiff_page.nbytes)
            maximum = tiff_page.tags.get(_TIFF_MAX_SAMPLE_VALUE)
            extras = tuple(getattr(tiff_page, "extrasamples", ()) or ())
            array = tiff_page.asarray()
            photometric = tiff_page.photometric
            if array.ndim == 3 and tiff_page.planarconfig == tifffile.PLANARCONFIG.SEPARATE:
                array = np.moveaxis(array, 0, -1)
    except ImageProblem:
        raise
    except Exception as error:
        message = str(error)
        check = "truncated" if "failed to read" in message else "corrupt"
        raise ImageProblem(check, f"unreadable TIFF ({message})") from error
    rgb = photometric == tifffile.PHOTOMETRIC.RGB and array.ndim == 3 and array.shape[2] >= 3
    gray = (
        photometric in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.MINISWHITE)
        and array.ndim == 2
    )
    if not (rgb or gray):
        raise ImageProblem(
            "unsupported_pixels",
            f"unsupported TIFF layout ({photometric.name}, shape {array.shape})",
        )
    depth = _tiff_depth(array, maximum)
    alpha = None
    if rgb and array.shape[2] > 3 and extras and int(extras[0]) in (1, 2):  # (un)assoc. alpha
        alpha, _ = _to_uint8(array[..., 3], depth)
    converted, more = _to_uint8(np.ascontiguousarray(array[..., :3] if rgb else array), depth)
    notes += more
    if gray:
        if photometric == tifffile.PHOTOMETRIC.MINISWHITE:
            converted = 255 - converted
        return np.repeat(converted[..., None], 3, axis=2), [*notes, "grayscale -> RGB"]
    if alpha is not None:
        weight = alpha[..., None].astype(np.float32) / 255
        converted = np.rint(converted * weight + 255 * (1 - weight)).astype(np.uint8)
        notes.append("RGBA -> RGB (transparency composited on white)")
    elif array.shape[2] > 3:
        notes.append("extra samples dropped")
    return converted, notes


def _tiff_depth(array: np.ndarray, maximum: Any) -> _Depth:
    """Stored bits from the dtype; significant bits from MaxSampleValue, when it says less."""
    stored = array.dtype.itemsize * 8 if array.dtype.kind in "ui" else 8
    value = getattr(maximum, "value", None)
    top = max(value) if isinstance(value, tuple | list) else value
    if isinstance(top, int) and 0 < top < (1 << stored) - 1:
        return _Depth(stored, top.bit_length(), "MaxSampleValue")
    return _Depth(stored)


# --- validating the cohort ---------------------------------------------------------------------


def validate_cohort(
    records: pd.DataFrame,
    *,
    label_map: Mapping[str, str],
    allowed_labels: list[str] | tuple[str, ...],
    min_side: int,
    min_tissue_fraction: float,
    min_saturation: int = 12,
    tiff_page: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check every file before training: (valid images, quarantined files with reasons).

    Files are decoded one at a time and only a hash is kept, so memory stays flat. Then the
    cross-file checks run: a patient under two labels or in two splits, and exact duplicates.
    Both tables are sorted by path, so a rerun gives the same tables.
    """
    check_labels(label_map, allowed_labels)
    if min_side < 1 or not 0 <= min_tissue_fraction <= 1 or tiff_page < 0:
        raise CohortConfigError(
            "need patches.patch_size >= 1, 0 <= cohort.checks.min_tissue_fraction <= 1 and "
            f"cohort.source.tiff_page >= 0; got {min_side}, {min_tissue_fraction}, {tiff_page}"
        )
    missing = [column for column in RECORD_COLUMNS if column not in records.columns]
    if missing:
        raise ValueError(f"records lack column(s) {', '.join(missing)}")
    rows = records.sort_values("relative_path", kind="stable").to_dict("records")
    total, start = len(rows), time.perf_counter()
    checked, mask_rows = [], []
    for done, record in enumerate(rows, start=1):
        entry = _check_metadata(
            {key: _text(record[key]) for key in RECORD_COLUMNS}, label_map, allowed_labels
        )
        if entry["check"] is None:
            _check_image(entry, min_side, min_tissue_fraction, min_saturation, tiff_page)
        if entry["check"] is None and entry["mask_path"]:
            mask_rows += _check_mask(entry)
        checked.append(entry)
        _report_progress(done, total, start, progress)
    _flag_patient_conflicts(checked, "label", allowed_labels, "under more than one label")
    _flag_patient_conflicts(checked, "split", SPLITS, "in more than one split")
    _flag_duplicates(checked)
    valid = _frame(
        [{**e, "notes": "; ".join(e["notes"])} for e in checked if e["check"] is None],
        VALID_COLUMNS,
    )
    quarantine = pd.DataFrame(
        [
            {"file": e["relative_path"], "check": e["check"], "reason": e["reason"]}
            for e in checked
            if e["check"] is not None
        ]
        + mask_rows,
        columns=QUARANTINE_COLUMNS,
    )
    quarantine = quarantine.sort_values(["file", "check"], kind="stable").reset_index(drop=True)
    _log_summary(valid, quarantine, total)
    return valid, quarantine


def _check_metadata(
    record: dict[str, Any],
    label_map: Mapping[str, str],
    allowed_labels: list[str] | tuple[str, ...],
) -> dict[str, Any]:
    """Label, patient and split checks, which need no decoding."""
    entry = {
        **record,
        "label": None,
        "content_hash": None,
        "height": None,
        "width": None,
        "tissue_fraction": None,
        "notes": [],
        "check": record["problem_check"],
        "reason": record["problem"],
    }
    if entry["check"] is not None:
        return entry
    raw = record["raw_label"]
    label = label_map.get(raw, raw if raw in allowed_labels else None) if raw else None
    if not raw:
        entry.update(check="missing_label", reason="missing label")
    elif label is None:
        entry.update(
            check="unknown_label",
            reason=f"unknown label {raw!r}; allowed: {', '.join(sorted(allowed_labels))}"
            ", or add it to cohort.source.label_map",
        )
    elif not record["patient_id"]:
        entry.update(check="missing_patient_id", reason="missing patient id")
    elif record["split"] is not None and record["split"] not in SPLITS:
        entry.update(
            check="invalid_split",
            reason=f"invalid split {record['split']!r}; allowed: {', '.join(SPLITS)}",
        )
    entry["label"] = label
    return entry


def _check_image(
    entry: dict[str, Any],
    min_side: int,
    min_tissue_fraction: float,
    min_saturation: int,
    tiff_page: int,
) -> None:
    """Decode, then size and tissue checks; keeps only a hash of the pixels."""
    try:
        image, notes = read_rgb(entry["image_path"], tiff_page)
    except ImageProblem as problem:
        entry.update(check=problem.check, reason=problem.reason)
        return
    height, width = image.shape[:2]
    digest = hashlib.sha256(f"{height}x{width}:".encode())
    digest.update(np.ascontiguousarray(image).data)
    entry.update(content_hash=digest.hexdigest(), height=height, width=width, notes=notes)
    if min(height, width) < min_side:
        entry.update(
            check="too_small",
            reason=f"too small for one patch: {width}x{height} px, patch size {min_side}",
        )
        return
    fraction = float(tissue_mask(image, min_saturation).mean())
    entry["tissue_fraction"] = fraction
    if fraction < min_tissue_fraction:
        entry.update(
            check="no_tissue",
            reason=f"no tissue: {fraction:.1%} of the image is "
            f"tissue, need {min_tissue_fraction:.1%}",
        )


def _check_mask(entry: dict[str, Any]) -> list[dict[str, str]]:
    """A bad mask is dropped, not the image: it can still be classified without one."""
    try:
        if entry.get("mask_problem"):
            raise ImageProblem("outside_root", entry["mask_problem"])
        mask = read_mask(entry["mask_path"])
        if mask.shape != (entry["height"], entry["width"]):
            raise ImageProblem(
                "mask_size",
                f"size {mask.shape[1]}x{mask.shape[0]} px differs "
                f"from the image's {entry['width']}x"
                f"{entry['height']} px",
            )
        top = int(mask.max()) if mask.size else 0
        if top > max(MASK_CLASSES.values()):
            classes = ", ".join(f"{v} {k}" for k, v in MASK_CLASSES.items())
            raise ImageProblem(
                "mask_values",
                f"values must be class indices 0-"
                f"{max(MASK_CLASSES.values())} ({classes}); "
                f"found values up to {top}",
            )
    except ImageProblem as problem:
        entry["notes"].append(f"mask dropped: {problem.reason}")
        entry["mask_path"] = None
        return [
            {
                "file": entry["mask_relative_path"],
                "check": "mask",
                "reason": f"mask {problem.reason}; image {entry['relative_path']} kept "
                "without a mask",
            }
        ]
    return []


def _flag_patient_conflicts(
    entries: list[dict[str, Any]], field: str, allowed: list[str] | tuple[str, ...], wording: str
) -> None:
    """A patient under two labels (or in two splits) is contradictory: quarantine all of it.

    The reason refers to 'the patient in this file', never to the id itself.
    """
    values: dict[str, set[str]] = defaultdict(set)
    for entry in entries:
        if entry["label"] and entry["patient_id"] and entry[field] in allowed:
            values[entry["patient_id"]].add(entry[field])
    for entry in entries:
        seen = values.get(entry["patient_id"] or "", set())
        if entry["check"] is None and len(seen) > 1:
            entry.update(
                check=f"patient_{field}_conflict",
                reason=f"patient in this file appears {wording} ({', '.join(sorted(seen))})",
            )


def _flag_duplicates(entries: list[dict[str, Any]]) -> None:
    """Same pixels twice: keep the first copy of one patient and label, or none if they differ.

    The same image under two patients or labels would leak across splits, so all copies go.
    """
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        if entry["content_hash"]:
            groups[entry["content_hash"]].append(entry)
    for copies in groups.values():
        if len(copies) < 2:
            continue
        owners = {(entry["patient_id"], entry["label"]) for entry in copies}
        if len(owners) > 1:
            for entry in copies:
                others = sorted({c["relative_path"] for c in copies} - {entry["relative_path"]})
                if entry["check"] is None:
                    entry.update(
                        check="same_image_two_owners",
                        reason="same image under two patients/labels; other copies: "
                        + ", ".join(others)
                        if others
                        else "same image under two patients/labels: this path is "
                        "listed more than once with different patients or "
                        "labels",
                    )
            continue
        valid = [entry for entry in copies if entry["check"] is None]
        for entry in valid[1:]:
            kept = valid[0]["relative_path"]
            entry.update(
                check="duplicate",
                reason="listed more than once"
                if entry["relative_path"] == kept
                else f"duplicate of {kept}",
            )


def _report_progress(
    done: int, total: int, start: float, progress: Callable[[int, int], None] | None
) -> None:
    if progress is not None:
        progress(done, total)
    if done % max(1, total // 10) == 0 or done == total:
        rate = done / max(time.perf_counter() - start, 1e-9)
        logger.info("Validating cohort: %d/%d files (%.1f images/s)", done, total, rate)


def _log_summary(valid: pd.DataFrame, quarantine: pd.DataFrame, total: int) -> None:
    """Counts only: paths and reasons can hold patient ids."""
    per_label = valid.groupby("label")["patient_id"].nunique() if len(valid) else {}
    logger.info(
        "Cohort validation: %d of %d files valid, %d patients (%s)",
        len(valid),
        total,
        valid["patient_id"].nunique(),
        ", ".join(f"{k}={v}" for k, v in sorted(dict(per_label).items())),
    )
    if len(quarantine):
        logger.warning(
            "Quarantined %d file(s) by check: %s",
            len(quarantine),
            ", ".join(f"{k}={v}" for k, v in sorted(Counter(quarantine["check"]).items())),
        )
