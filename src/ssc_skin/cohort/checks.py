"""One check runner for every kind of input item (images, slides); no Kedro here.

Each item (one discovery record: a file with its patient, label and split) goes through the
same steps, so images and slides quarantine for the same reasons with the same words:

1. the metadata checks, which need no file (label, patient, split);
2. an ordered list of named checks (`Check`), stopping at the first that raises
   `ImageProblem`; a check may add facts to the item (size, hash) and may return extra
   quarantine rows for companion files (a bad mask is quarantined, its image goes on);
3. the cross-item checks: a patient under two labels or in two splits, exact duplicates.

The result is (accepted records, quarantine rows with ``file, check, reason``), both sorted
by path so that a rerun gives the same tables. Item checks run on a small thread pool
(`workers`): they are dominated by file-system calls and decoders that release the GIL, and at
most ``2 * workers`` items are in flight, so memory is bounded by that many items, whatever
the cohort's size.

Example, a slide check (what ``slides/wsi.py`` needs)::

    from ssc_skin.cohort.checks import Check, ImageProblem, check_items

    def slide_facts(entry):
        if entry["image_path"].endswith(".bad"):
            raise ImageProblem("unreadable", "OpenSlide cannot read the slide")
        entry.update(width=1000, height=800)  # facts for the accepted record

    valid, quarantine = check_items(
        records,  # the columns of RECORD_COLUMNS, one row per file
        [Check("slide", slide_facts)],
        label_map={"SSc": "late"},
        allowed_labels=["normal", "early", "late"],
        columns=[*VALID_COLUMNS, "mpp"],  # columns of `valid`; missing facts are None
    )

Patient ids are private: log lines carry counts only, never ids, paths or reasons.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ssc_skin.cohort.config import check_labels
from ssc_skin.constants import SPLITS

# One logger for the whole ingestion stage (discovery, checks, summary): one name to set a
# level for, and the name users have seen in their logs.
logger = logging.getLogger("ssc_skin.cohort.ingest")

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
NUMERIC = {"height": "int64", "width": "int64", "tissue_fraction": "float64"}
PROGRESS_SECONDS = 15.0  # at most one progress line this often (and one at the end)


class ImageProblem(Exception):
    """A file that cannot be used; `check` is a stable code, the message says why."""

    def __init__(self, check: str, reason: str) -> None:
        super().__init__(check, reason)  # both in args, so that it pickles across processes
        self.check = check
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class Check:
    """A named check of one item: `run(entry)` raises ImageProblem to quarantine the item,
    may update `entry` with facts, and may return quarantine rows for companion files."""

    name: str
    run: Callable[[dict[str, Any]], Iterable[dict[str, str]] | None]


def check_items(
    records: pd.DataFrame,
    checks: Sequence[Check],
    *,
    label_map: Mapping[str, str],
    allowed_labels: Sequence[str],
    columns: Sequence[str] = VALID_COLUMNS,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    what: str = "images",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(accepted records in `columns`, quarantine rows): see the module docstring.

    `progress(done, total)` is called once per item, in order.
    """
    check_labels(label_map, allowed_labels)
    missing = [column for column in RECORD_COLUMNS if column not in records.columns]
    if missing:
        raise ValueError(f"records lack column(s) {', '.join(missing)}")
    rows = records.sort_values("relative_path", kind="stable").to_dict("records")
    entries = (new_entry(record, label_map, allowed_labels, columns) for record in rows)
    meter = Progress(len(rows), what, progress)
    checked, side_rows = [], []
    for entry, extra in map_in_order(lambda e: (e, run_checks(e, checks)), entries, workers):
        checked.append(entry)
        side_rows += extra
        meter.step()
    flag_patient_conflicts(checked, "label", allowed_labels, "under more than one label")
    flag_patient_conflicts(checked, "split", SPLITS, "in more than one split")
    flag_duplicates(checked)
    valid = frame(
        [{**e, "notes": "; ".join(e["notes"])} for e in checked if e["check"] is None], columns
    )
    quarantine = pd.DataFrame(
        [
            {"file": e["relative_path"], "check": e["check"], "reason": e["reason"]}
            for e in checked
            if e["check"] is not None
        ]
        + side_rows,
        columns=QUARANTINE_COLUMNS,
    )
    quarantine = quarantine.sort_values(["file", "check"], kind="stable").reset_index(drop=True)
    log_summary(valid, quarantine, len(rows))
    return valid, quarantine


def new_entry(
    record: Mapping[str, Any],
    label_map: Mapping[str, str],
    allowed_labels: Sequence[str],
    columns: Sequence[str] = VALID_COLUMNS,
) -> dict[str, Any]:
    """The working dict of one item: its record (text cells stripped), every column of
    `columns` (None until a check fills it) and the outcome of the metadata checks."""
    entry = {**record, **{key: text(record.get(key)) for key in RECORD_COLUMNS}}
    for column in columns:
        entry.setdefault(column, None)
    return check_metadata(entry, label_map, allowed_labels)


def run_checks(entry: dict[str, Any], checks: Sequence[Check]) -> list[dict[str, str]]:
    """Run `checks` in order until one quarantines the entry; the companion rows they made."""
    extra: list[dict[str, str]] = []
    for check in checks:
        if entry["check"] is not None:
            break
        try:
            extra += list(check.run(entry) or ())
        except ImageProblem as problem:
            entry.update(check=problem.check, reason=problem.reason)
    return extra


def check_metadata(
    record: dict[str, Any],
    label_map: Mapping[str, str],
    allowed_labels: Sequence[str],
) -> dict[str, Any]:
    """Label, patient and split checks, which need no decoding."""
    entry = {
        **record,
        "label": None,
        "content_hash": record.get("content_hash"),
        "height": record.get("height"),
        "width": record.get("width"),
        "tissue_fraction": record.get("tissue_fraction"),
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


def flag_patient_conflicts(
    entries: list[dict[str, Any]], field: str, allowed: Sequence[str], wording: str
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


def flag_duplicates(entries: list[dict[str, Any]]) -> None:
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


def map_in_order(fn: Callable[[Any], Any], items: Iterable[Any], workers: int = 1) -> Iterator[Any]:
    """`fn(item)` for each item, in input order, on `workers` threads (1: in this thread).

    At most `2 * workers` items are submitted ahead of the one being yielded, so a long
    input is never read, nor its results held, all at once.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    window: deque[Future[Any]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cohort-check") as pool:
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= 2 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where there is none (macOS, Windows, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


class Budget:
    """At most `limit` units (pixels) in use at once across threads; a request larger than
    the limit waits until nothing else is in use and then runs alone.

    Releasing a large share (>= 1/8 of the limit) hands freed heap memory back to the
    system (glibc `malloc_trim`): each worker thread has its own malloc arena, which would
    otherwise keep the high-water mark of the largest image it decoded (measured: 4 threads,
    four 36 MP images, 850 MB peak above the imports instead of 464 MB with one thread).
    """

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, amount: int) -> Iterator[None]:
        amount = max(0, min(amount, self.limit))
        with self._changed:
            self._changed.wait_for(lambda: self.used == 0 or self.used + amount <= self.limit)
            self.used += amount
        try:
            yield
        finally:
            if _TRIM is not None and amount >= self.limit // 8:
                _TRIM(0)
            with self._changed:
                self.used -= amount
                self._changed.notify_all()


def default_workers() -> int:
    """Threads for item checks: I/O-bound, so a few more than cores, never many."""
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


class Progress:
    """Count, rate and ETA in the log at most every PROGRESS_SECONDS, and once at the end;
    `callback(done, total)` after every item."""

    def __init__(
        self,
        total: int,
        what: str = "images",
        callback: Callable[[int, int], None] | None = None,
        seconds: float = PROGRESS_SECONDS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total, self.what, self.callback, self.seconds, self.clock = (
            total,
            what,
            callback,
            seconds,
            clock,
        )
        self.done = 0
        self.start = self.last = clock()

    def step(self) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(self.done, self.total)
        now = self.clock()
        if now - self.last >= self.seconds or self.done == self.total:
            self.last = now
            elapsed = max(now - self.start, 1e-9)
            rate = self.done / elapsed
            left = (self.total - self.done) / rate if rate else 0.0
            logger.info(
                "Validating cohort: %d/%d %s (%.1f %s/s, ETA %s)",
                self.done,
                self.total,
                self.what,
                rate,
                self.what,
                _duration(left),
            )


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return (
        f"{minutes} min {seconds:02d} s"
        if minutes < 60
        else f"{minutes // 60} h {minutes % 60:02d} min"
    )


def log_summary(valid: pd.DataFrame, quarantine: pd.DataFrame, total: int) -> None:
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


def frame(
    rows: list[dict[str, Any]], columns: Sequence[str], numeric: Mapping[str, str] = NUMERIC
) -> pd.DataFrame:
    """Text columns stay `object` so that a missing value is None, not NaN."""
    return pd.DataFrame(
        {
            column: pd.Series([row[column] for row in rows], dtype=numeric.get(column, object))
            for column in columns
        },
        columns=list(columns),
    )


def text(value: Any) -> str | None:
    """A stripped string, or None for missing, NaN and blank cells."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    value = str(value).strip()
    return value or None
