"""Patch arrays written to disk as they are cut, so the patches stage holds one image's (or
one slide batch's) patches in memory, not the cohort's.

`PatchStore` appends rows to `.npy` files in a private staging folder and hands back
read-only memory maps of them; the catalog's `PatchArraysDataset` then moves the files into
place (`take_staged`) instead of copying them through memory. numpy pads every `.npy` header
so that the length of axis 0 can be rewritten in place: a file can grow without knowing its
final size. No Kedro here.
"""

from __future__ import annotations

import io
import mmap
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy

# staged files of this process that a dataset may move (never a file it did not stage)
_STAGED: set[str] = set()


class NpyAppender:
    """An `.npy` file of `row_shape` rows grown by `append`; `truncate` drops rows again (a
    slide that fails mid-read). `close` writes the final shape into the header."""

    def __init__(self, path: Path, row_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.row_shape, self.dtype = Path(path), tuple(row_shape), np.dtype(dtype)
        self.rows = 0
        self._row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._file: BinaryIO = self.path.open("wb+")
        self._offset = self._write_header(0)

    def _header(self, rows: int) -> bytes:
        header = io.BytesIO()
        shape = {"descr": npy.dtype_to_descr(self.dtype), "fortran_order": False}
        npy.write_array_header_1_0(header, {**shape, "shape": (rows, *self.row_shape)})
        return header.getvalue()

    def _write_header(self, rows: int) -> int:
        header = self._header(rows)
        self._file.seek(0)
        self._file.write(header)
        return len(header)

    def append(self, rows: np.ndarray) -> None:
        """Rows of `row_shape` (cast to the file's dtype) at the end of the file."""
        rows = np.asarray(rows)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"rows of shape {rows.shape[1:]} in a file of {self.row_shape}")
        if not len(rows):
            return
        self._file.seek(self._offset + self.rows * self._row_bytes)
        self._file.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        self.rows += len(rows)

    def truncate(self, rows: int) -> None:
        """Keep only the first `rows` rows."""
        if not 0 <= rows <= self.rows:
            raise ValueError(f"cannot truncate {self.rows} rows to {rows}")
        self.rows = rows
        self._file.truncate(self._offset + rows * self._row_bytes)

    def close(self) -> np.ndarray:
        """The finished file as a read-only memory map (a plain empty array when empty)."""
        if self._write_header(self.rows) != self._offset:  # numpy reserves room for this
            raise RuntimeError(f"{self.path.name}: the .npy header outgrew its reserved space")
        self._file.truncate(self._offset + self.rows * self._row_bytes)
        self._file.close()
        return np.load(self.path, mmap_mode="r")


class PatchStore:
    """The patches stage's arrays (`images`: N x s x s x 3, `masks`: N x s x s, uint8),
    appended image by image in a staging folder of their own."""

    def __init__(self, patch_size: int, staging_dir: str | Path | None = None) -> None:
        if staging_dir is not None:
            Path(staging_dir).mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="ssc-patches-", dir=staging_dir))
        shapes = {"images": (patch_size, patch_size, 3), "masks": (patch_size, patch_size)}
        self._files = {
            name: NpyAppender(self.folder / f"{name}.npy", shape, np.dtype(np.uint8))
            for name, shape in shapes.items()
        }

    def __len__(self) -> int:
        return self._files["images"].rows

    def add(self, images: np.ndarray, masks: np.ndarray) -> None:
        """One image's (or slide batch's) patches and the mask under each."""
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} patches but {len(masks)} masks")
        self._files["images"].append(images)
        self._files["masks"].append(masks)

    def truncate(self, rows: int) -> None:
        """Drop every patch after the first `rows` (a slide that failed mid-read)."""
        for appender in self._files.values():
            appender.truncate(rows)

    def finish(self) -> dict[str, np.ndarray]:
        """The arrays as read-only memory maps; the staging folder goes when they do, unless a
        dataset took the files first (`take_staged`)."""
        arrays = {name: appender.close() for name, appender in self._files.items()}
        for appender in self._files.values():
            _STAGED.add(str(appender.path))
        weakref.finalize(arrays["images"], _discard, self.folder)
        return arrays


def _discard(folder: Path) -> None:
    for path in folder.glob("*.npy"):
        _STAGED.discard(str(path))
    shutil.rmtree(folder, ignore_errors=True)


def staged_file(array: np.ndarray) -> Path | None:
    """The staging file behind `array` when it is a whole array a `PatchStore` wrote in this
    process and no one has taken yet; None otherwise (never a file loaded from elsewhere)."""
    filename = getattr(array, "filename", None)
    if not isinstance(array, np.memmap) or filename is None or str(filename) not in _STAGED:
        return None
    if not isinstance(array.base, mmap.mmap):  # a view (slice, reversed, ...) of the file
        return None
    return Path(filename)


def take_staged(array: np.ndarray, target: Path) -> bool:
    """Move a staged array's file to `target` (a rename when on the same file system, else a
    streamed copy); False when `array` is not staged, and nothing is done."""
    source = staged_file(array)
    if source is None:
        return False
    _STAGED.discard(str(source))
    try:
        source.replace(target)
    except OSError:  # another file system, or a platform that refuses to move a mapped file
        shutil.copyfile(source, target)
    return True
