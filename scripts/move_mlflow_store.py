"""Point a moved project's MLflow store at its artifacts again.

MLflow records absolute artifact locations (`<project>/mlruns/<experiment>/...`) in `mlflow.db`
when an experiment is created, so after the project folder moves (another disk, another
machine, a renamed folder) runs open with "artifacts not found". This rewrites the old folder
prefix to the new one in every column MLflow keeps such a location in; nothing else changes.

    .venv/bin/python scripts/move_mlflow_store.py [--db mlflow.db] [--old /old/project/folder]

`--old` defaults to the folder the store itself records (the parent of `mlruns/`); the new
folder is the one `mlflow.db` is in. Run it once after moving, with no MLflow process open.
A team server keeps artifacts behind its own URL (`mlflow-artifacts:/`) and needs none of this.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections import Counter
from pathlib import Path

# (table, column) pairs where MLflow 3 stores an artifact location or a model's source
COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
)
SCHEMES = ("", "file://")  # MLflow writes both `/abs/path` and `file:///abs/path`


def recorded_root(connection: sqlite3.Connection) -> str | None:
    """The project folder most runs' artifacts are recorded under (the parent of `mlruns/`);
    experiments count where there is no run yet."""
    counts: Counter[str] = Counter()
    for query in (
        "SELECT artifact_uri FROM runs",
        "SELECT artifact_location FROM experiments",
    ):
        for (location,) in connection.execute(query):
            path = str(location).removeprefix("file://")
            if path.startswith("/") and "/mlruns/" in path:
                counts[path[: path.index("/mlruns/")]] += 1
        if counts:
            break
    return counts.most_common(1)[0][0] if counts else None


def present_columns(connection: sqlite3.Connection) -> list[tuple[str, str]]:
    """The known (table, column) pairs this store's schema has (older stores lack some)."""
    found = []
    for table, column in COLUMNS:
        names = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
        if column in names:
            found.append((table, column))
    return found


def move(db: Path, old: str, new: str) -> int:
    """Rewrite `old` -> `new` at the start of every recorded location; returns rows changed."""
    old, new = old.rstrip("/"), new.rstrip("/")
    changed = 0
    with sqlite3.connect(db) as connection:
        for table, column in present_columns(connection):
            for scheme in SCHEMES:
                prefix = f"{scheme}{old}"
                cursor = connection.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608
                    f"WHERE {column} = ? OR {column} LIKE ? ESCAPE '\\'",
                    (
                        f"{scheme}{new}",
                        len(prefix) + 1,
                        prefix,
                        prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%",
                    ),
                )
                changed += cursor.rowcount
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("mlflow.db"))
    parser.add_argument("--old", help="the folder the project was in (default: as recorded)")
    args = parser.parse_args(argv)
    if not args.db.is_file():
        print(f"move_mlflow_store: no MLflow store {args.db.name} here", file=sys.stderr)  # noqa: T201
        return 2
    new = str(args.db.resolve().parent)
    with sqlite3.connect(args.db) as connection:
        old = args.old or recorded_root(connection)
    if not old:
        print("move_mlflow_store: no local artifact location recorded; pass --old", file=sys.stderr)  # noqa: T201
        return 2
    if old.rstrip("/") == new:
        print("move_mlflow_store: the store already points here; nothing to do")  # noqa: T201
        return 0
    changed = move(args.db, old, new)
    print(f"move_mlflow_store: {changed} locations now under this folder")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
