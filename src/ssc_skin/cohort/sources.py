"""Where a cohort's files are: discovery of a folder or a manifest, and the path checks.

Two layouts (see `cohort.config` for the settings):

- ``folder``: ``<root>/<label>/**/<image>``; the patient id comes from a regex (named group
  ``patient``) searched in the file name, or (``patient_from: folder``) from the folder below
  the label folder, ``<root>/<label>/<patient>/**/<image>``.
- ``manifest``: a CSV (UTF-8) with ``image_path, patient_id, label`` and optional
  ``mask_path`` and ``split``; relative paths resolve against the manifest's folder.

Only files inside the cohort folder are read (the folder's own, or the manifest's folder, or
``root`` for a manifest): a symbolic link or a manifest path that leads outside it is
flagged ``outside_root`` unless ``allow_outside_root: true``. Hidden files and folders,
Thumbs.db and desktop.ini are skipped silently; any other file without an image extension
comes back flagged, so that nothing vanishes unseen. Nothing here writes to the user's folder.

File names that are not valid UTF-8 are shown with their odd bytes escaped (``caf\\xe9.png``)
and read as they are. No Kedro here.
"""

from __future__ import annotations

import codecs
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ssc_skin.cohort.checks import RECORD_COLUMNS, frame, text
from ssc_skin.cohort.config import (
    DEFAULT_PATIENT_ID_REGEX,
    CohortConfigError,
    check_source_config,
    compile_patient_regex,
    path_exists,
)

logger = logging.getLogger("ssc_skin.cohort.ingest")  # the ingestion stage's one logger

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
MANIFEST_REQUIRED = ("image_path", "patient_id", "label")
MANIFEST_OPTIONAL = ("mask_path", "split")
# Operating-system and tool litter, skipped silently (counted in a debug log line).
JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})
MANIFEST_KEY = "cohort.source.manifest"
CHUNK_ROWS = 20_000  # manifest rows parsed at a time


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
    for path, outside in walk(root_path, allow_outside_root):
        relative = display_text(path.relative_to(root_path).as_posix())
        if is_junk(path.name):
            ignored += 1
            continue
        folders = relative.split("/")[:-1]
        row = record(
            str(path),
            relative,
            raw_label=folders[0] if folders else None,
            patient_id=_patient_id(
                path.name, folders[1 if label_folders else 0 :], pattern, patient_from
            ),
        )
        if outside:
            row.update(problem_check="outside_root", problem=OUTSIDE_ROOT)
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


OUTSIDE_ROOT = (
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


def display_text(name: str) -> str:
    """A file name as printable UTF-8: bytes that are not UTF-8 are escaped (``\\xe9``).

    On POSIX, Python keeps such bytes as lone surrogates, which cannot be written to a CSV
    or hashed as UTF-8; the escaped form is stable, so pseudonyms stay stable too.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return name


def manifest_file(path: str | os.PathLike[str]) -> Path:
    """The configured manifest (images or slides) as an existing file, or one message naming
    the setting: never its name or folder, which may carry a patient's name."""
    manifest = Path(path).expanduser()
    if not path_exists(manifest, MANIFEST_KEY, "file"):
        raise CohortConfigError(
            f"{MANIFEST_KEY} is not a file: the configured path does not exist or is not a "
            "regular file (its name is not shown: it may carry a patient's name)"
        )
    return manifest


def read_manifest(
    path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    allow_outside_root: bool = False,
    chunk_rows: int = CHUNK_ROWS,
) -> pd.DataFrame:
    """Records of a manifest CSV (comma, semicolon or tab separated, UTF-8), in the same columns.

    Relative paths resolve against the manifest's folder; backslashes count as separators so
    that a manifest written on Windows works elsewhere. Paths must stay inside `root` (the
    manifest's folder by default) unless `allow_outside_root`. The CSV is read `chunk_rows`
    rows at a time (a lab's manifest of every archived slide has 200,000 rows). Messages
    name the setting (`cohort.source.manifest`), never the manifest's own file name.
    """
    manifest = manifest_file(path)
    _check_utf8(manifest)
    separator = _separator(manifest)
    base = str(manifest.parent)
    fence = (
        None if allow_outside_root else _Fence(Path(root).expanduser() if root else manifest.parent)
    )
    rows = []
    for table in _manifest_chunks(manifest, separator, chunk_rows):
        first_line = 2 + len(rows)
        for line, entry in enumerate(table.to_dict("records"), start=first_line):
            rows.append(_manifest_record(entry, f"{manifest.name} line {line}", base, fence))
    return _records_frame(rows)


def _manifest_record(
    entry: Mapping[str, Any], where: str, base: str, fence: _Fence | None
) -> dict[str, Any]:
    """The record of one manifest row (`where`: its line, the name of a row without a
    path, which the report hides like any other), with its path checks."""
    image = text(entry["image_path"])
    mask = text(entry.get("mask_path"))
    split = text(entry.get("split"))
    image_path, relative = resolve(image, base) if image else (None, where)
    mask_path, mask_relative = resolve(mask, base) if mask else (None, None)
    row = record(
        image_path,
        relative,
        patient_id=text(entry["patient_id"]),
        raw_label=text(entry["label"]),
        mask_path=mask_path,
        mask_relative_path=mask_relative,
        split=split.lower() if split else None,
    )
    if not image:
        row.update(problem_check="missing_image_path", problem="missing image path")
    elif fence and not fence.contains(image_path):
        row.update(problem_check="outside_root", problem=OUTSIDE_ROOT)
    if mask and fence and not fence.contains(mask_path):
        row.update(mask_problem=OUTSIDE_ROOT)
    return row


def _check_utf8(manifest: Path) -> None:
    """One message naming the setting when the manifest is not UTF-8 (read in blocks)."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    with manifest.open("rb") as handle:
        try:
            for block in iter(lambda: handle.read(1 << 20), b""):
                decoder.decode(block)
            decoder.decode(b"", final=True)
            return
        except UnicodeDecodeError:
            pass
    data = manifest.read_bytes()  # only on error: where, exactly, for the message
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff"))
        raise CohortConfigError(
            f"{MANIFEST_KEY} is not UTF-8 text ({'UTF-16' if utf16 else 'another encoding'}: "
            f"byte 0x{data[error.start]:02x} at position {error.start}); save it as CSV UTF-8 "
            "(e.g. Excel: Save As > CSV UTF-8)"
        ) from error


def _separator(manifest: Path) -> str:
    """Comma, semicolon or tab: whichever the header line holds most of."""
    with manifest.open(encoding="utf-8-sig", newline="") as handle:
        header = handle.readline()
    return max(",;\t", key=header.count)


def _manifest_chunks(manifest: Path, separator: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The manifest as text cells, `chunk_rows` rows at a time, lower-case column names;
    an empty file, a missing column or a broken row is one message naming the setting."""
    options = {"sep": separator, "dtype": str, "keep_default_na": False, "encoding": "utf-8-sig"}
    try:
        header = pd.read_csv(manifest, nrows=0, **options)
    except pd.errors.EmptyDataError as error:
        raise CohortConfigError(f"{MANIFEST_KEY} is empty") from error
    columns = [str(column).strip().lower() for column in header.columns]
    missing = [column for column in MANIFEST_REQUIRED if column not in columns]
    if missing:
        raise CohortConfigError(
            f"{MANIFEST_KEY} lacks required column(s) {', '.join(missing)}; "
            f"required: {', '.join(MANIFEST_REQUIRED)}, optional: "
            f"{', '.join(MANIFEST_OPTIONAL)}; found: {', '.join(columns)}"
        )
    try:
        with pd.read_csv(manifest, chunksize=chunk_rows, **options) as reader:
            for table in reader:
                table.columns = columns
                yield table
    except pd.errors.ParserError as error:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(error))
        where = (
            f"line {found.group(2)} has {found.group(3)} fields where the header has "
            f"{found.group(1)}"
            if found
            else f"cannot be parsed ({error})"
        )
        raise CohortConfigError(
            f"{MANIFEST_KEY}: {where}; quote values that contain the separator {separator!r} "
            '(e.g. "SSc, late")'
        ) from error


def walk(root: Path, allow_outside_root: bool) -> Iterator[tuple[Path, bool]]:
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
            if is_junk(name):
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


def _inside(path: str | os.PathLike[str], fence: str) -> bool:
    """Whether the path, with every link resolved, lies inside the folder `fence` (real)."""
    real = os.path.realpath(path)
    return real == fence or real.startswith(fence.rstrip(os.sep) + os.sep)


class _Fence:
    """`_inside` for many paths: each folder is resolved once, each file is one `lstat`."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.real = os.path.realpath(folder)
        self._folders: dict[str, str] = {}

    def contains(self, path: str) -> bool:
        folder, name = os.path.split(path)
        if os.path.islink(path):
            real = os.path.realpath(path)
        else:
            if folder not in self._folders:
                self._folders[folder] = os.path.realpath(folder)
            real = os.path.join(self._folders[folder], name)
        return real == self.real or real.startswith(self.real.rstrip(os.sep) + os.sep)


def is_junk(name: str) -> bool:
    return name.startswith(".") or name.lower() in JUNK_NAMES


def resolve(value: str, base: str | os.PathLike[str]) -> tuple[str, str]:
    """Absolute path and the path shown in reports (relative to base where possible)."""
    base = os.fspath(base)
    path = os.path.expanduser(value.replace("\\", "/"))
    absolute = os.path.normpath(path if os.path.isabs(path) else os.path.join(base, path))
    folder = os.path.normpath(base)
    prefix = folder.rstrip("/") + "/"
    if absolute == folder:
        shown = "."
    else:
        shown = absolute[len(prefix) :] if absolute.startswith(prefix) else absolute
    return absolute, display_text(shown)


def record(image_path: str | None, relative_path: str, **fields: Any) -> dict[str, Any]:
    row = dict.fromkeys(RECORD_COLUMNS)
    row.update(image_path=image_path, relative_path=relative_path, **fields)
    return row


def _records_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    table = frame(rows, RECORD_COLUMNS)
    return table.sort_values("relative_path", kind="stable").reset_index(drop=True)


# The names slides/ and predict imported before they were public (kept until they switch).
_OUTSIDE_ROOT, _walk, _is_junk, _resolve, _record = (
    OUTSIDE_ROOT,
    walk,
    is_junk,
    resolve,
    record,
)
