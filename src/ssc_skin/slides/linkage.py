"""Where a cohort's slides are: pseudonym -> file, from the local linkage table only (the
manifest that travels carries no path)."""

from __future__ import annotations

import pandas as pd


def slide_paths(manifest: pd.DataFrame, linkage: pd.DataFrame | None) -> dict[str, str]:
    """Slide pseudonym -> its file, for the manifest's slide rows (from the local linkage)."""
    if "kind" not in manifest.columns or not (manifest["kind"] == "slide").any():
        return {}
    if linkage is None or "slide_path" not in linkage.columns:
        raise ValueError(
            "the manifest has slides but data/02_intermediate/linkage.csv has no "
            "slide_path column: run the cohort pipeline again"
        )
    known = linkage.dropna(subset=["slide_path"])
    paths = dict(zip(known["image"], known["slide_path"], strict=True))
    missing = [
        name for name in manifest.loc[manifest["kind"] == "slide", "image"] if name not in paths
    ]
    if missing:
        raise ValueError(
            f"{len(missing)} slide(s) of the manifest are not in the linkage "
            "table: run the cohort pipeline again"
        )
    return paths
