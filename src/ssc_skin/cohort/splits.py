"""Patient-level train / validation / test splits: no patient ever crosses a split."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from ssc_skin.constants import SPLITS

logger = logging.getLogger(__name__)


def patient_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per patient with their label; a patient under two labels is an error."""
    labels = manifest.groupby("patient_id")["label"].unique()
    conflicting = labels[labels.map(len) > 1]
    if len(conflicting):
        raise ValueError(
            f"{len(conflicting)} patient(s) appear under more than one label; "
            "fix the manifest before splitting"
        )
    return labels.map(lambda values: values[0]).rename("label").reset_index()


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            "cohort.split.val_fraction and test_fraction must be in (0, 1) and sum "
            f"below 1; got {val_fraction} and {test_fraction}"
        )


def _check_class_sizes(patients: pd.DataFrame, needed: int, what: str) -> None:
    counts = patients["label"].value_counts()
    too_few = counts[counts < needed]
    if len(too_few):
        raise ValueError(
            f"each class needs at least {needed} patients ({what}); too few in: "
            + ", ".join(f"{label}={n}" for label, n in too_few.items())
        )


def _holdout(
    patients: pd.DataFrame, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, held out): a stratified share of patients, at least one per class."""
    n = max(patients["label"].nunique(), round(fraction * len(patients)))
    return train_test_split(patients, test_size=n, stratify=patients["label"], random_state=seed)


def split_patients(
    manifest: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int
) -> pd.DataFrame:
    """Stratified (by label) split of patients; returns columns patient_id, label, split."""
    _check_fractions(val_fraction, test_fraction)
    patients = patient_table(manifest)
    _check_class_sizes(patients, len(SPLITS), "one per split")
    rest, test = _holdout(patients, test_fraction, seed)
    train, val = _holdout(rest, val_fraction * len(patients) / len(rest), seed)
    return _table(train, val, test)


def kfold_split(
    manifest: pd.DataFrame, folds: int, fold: int, val_fraction: float, seed: int
) -> pd.DataFrame:
    """Patient-grouped, label-stratified k-fold: fold `fold` is test, val is drawn from the rest.

    Running every fold (`--params cohort.split.fold=k`) tests each patient exactly once.
    """
    if folds < 2 or not 0 <= fold < folds:
        raise ValueError(
            f"cohort.split.folds must be >= 2 and cohort.split.fold in "
            f"0..{folds - 1}; got folds={folds}, fold={fold}"
        )
    _check_fractions(val_fraction, 1 / folds)
    patients = patient_table(manifest)
    _check_class_sizes(patients, folds, f"one per fold of {folds}")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    train_idx, test_idx = list(splitter.split(patients, patients["label"], patients["patient_id"]))[
        fold
    ]
    rest, test = patients.iloc[train_idx], patients.iloc[test_idx]
    train, val = _holdout(rest, val_fraction * len(patients) / len(rest), seed)
    return _table(train, val, test)


def _table(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    table = pd.concat(
        [train.assign(split="train"), val.assign(split="val"), test.assign(split="test")]
    )
    return table.sort_values("patient_id").reset_index(drop=True)


def assign_splits(
    manifest: pd.DataFrame, params: Mapping[str, Any], previous: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Stratified patient-level split (or k-fold) of a cohort manifest, checked for leaks.

    `manifest` has `patient`, `label`, `fixed_split` and `content_hash`; `previous` is the
    table an earlier run saved. With `reuse_saved`, patients still present keep their saved
    split (same settings) and only new patients are split; a manifest `split` column wins.
    """
    if manifest.empty:
        raise ValueError(
            "no usable image in the cohort: every file was quarantined; see "
            "data/08_reporting/quarantine.csv for the reason of each"
        )
    cohort = manifest.rename(columns={"patient": "patient_id"})
    if params.get("folds", 0):
        table = kfold_split(
            cohort, params["folds"], params["fold"], params["val_fraction"], params["seed"]
        )
    else:
        table = split_patients(
            cohort, params["val_fraction"], params["test_fraction"], params["seed"]
        )
    settings = split_settings(params)
    saved = _saved_split(previous, settings) if params.get("reuse_saved", False) else None
    table = reuse_saved_split(table, saved)
    fixed = cohort.dropna(subset=["fixed_split"]).groupby("patient_id")["fixed_split"].first()
    table = apply_fixed_splits(table, fixed)
    assert_no_patient_leak(table)
    assert_every_split_has_every_class(table, saved=saved, fixed=fixed)
    assert_no_duplicate_leak(cohort.merge(table[["patient_id", "split"]], on="patient_id"))
    for split, part in table.groupby("split"):
        logger.info(
            "Split %s: %d patients (%s)",
            split,
            len(part),
            ", ".join(f"{k}={v}" for k, v in part["label"].value_counts().sort_index().items()),
        )
    return table.rename(columns={"patient_id": "patient"}).assign(settings=settings)


def split_settings(params: Mapping[str, Any]) -> str:
    """The settings a saved table was made with, as one comparable text."""
    keys = ("val_fraction", "test_fraction", "seed", "folds", "fold")
    return ",".join(f"{k}={params.get(k)}" for k in keys)


def _saved_split(saved: pd.DataFrame | None, settings: str) -> pd.DataFrame | None:
    """The split table an earlier run saved with the same settings, if any."""
    if saved is None or saved.empty:
        return None
    if "settings" not in saved or set(saved["settings"]) != {settings}:
        logger.info("The saved split table has other settings; splitting afresh")
        return None
    return saved.rename(columns={"patient": "patient_id"})[["patient_id", "label", "split"]]


def apply_fixed_splits(table: pd.DataFrame, fixed: pd.Series) -> pd.DataFrame:
    """Patients the user assigned (a manifest `split` column) keep their split."""
    fixed = fixed.dropna()
    bad = sorted(set(fixed) - set(SPLITS))
    if bad:
        raise ValueError(f"manifest split values must be one of {', '.join(SPLITS)}; got {bad}")
    table = table.copy()
    known = table["patient_id"].isin(fixed.index)
    table.loc[known, "split"] = table.loc[known, "patient_id"].map(fixed)
    return table


def reuse_saved_split(new: pd.DataFrame, saved: pd.DataFrame | None) -> pd.DataFrame:
    """Keep every known patient's saved split, so reruns compare like with like.

    Only patients absent from the saved table take their split from `new`; patients whose
    label changed since are re-split, with a warning.
    """
    if saved is None or saved.empty:
        return new
    previous = saved.set_index("patient_id")
    merged = new.set_index("patient_id")
    same = merged.index.intersection(previous.index)
    same = same[(previous.loc[same, "label"] == merged.loc[same, "label"]).to_numpy()]
    merged.loc[same, "split"] = previous.loc[same, "split"]
    changed = len(merged.index.intersection(previous.index)) - len(same)
    logger.info(
        "Split table reused for %d of %d patients (%d new%s)",
        len(same),
        len(merged),
        len(merged) - len(same) - changed,
        f", {changed} whose label changed re-split" if changed else "",
    )
    if changed:
        logger.warning("%d patient(s) changed label since the saved split", changed)
    return merged.reset_index()


def assert_no_patient_leak(split_table: pd.DataFrame) -> None:
    """Fail loudly if any patient is assigned to more than one split."""
    per_patient = split_table.groupby("patient_id")["split"].nunique()
    leaked = per_patient[per_patient > 1]
    if len(leaked):
        raise ValueError(f"{len(leaked)} patient(s) appear in more than one split")


def assert_no_duplicate_leak(images: pd.DataFrame) -> None:
    """Fail if the same image content (hash) sits in two splits: a leak by duplication."""
    per_hash = images.groupby("content_hash")["split"].nunique()
    leaked = per_hash[per_hash > 1]
    if len(leaked):
        raise ValueError(f"{len(leaked)} identical image(s) appear in more than one split")


def missing_cells(split_table: pd.DataFrame) -> list[str]:
    """Each `label/split` with no patient, e.g. ``normal/val``."""
    present = split_table.groupby(["label", "split"]).size()
    return [
        f"{label}/{split}"
        for label in sorted(split_table["label"].unique())
        for split in SPLITS
        if (label, split) not in present.index
    ]


def assert_every_split_has_every_class(
    split_table: pd.DataFrame,
    *,
    saved: pd.DataFrame | None = None,
    fixed: pd.Series | None = None,
) -> None:
    """Each class must have a patient in train, val and test, or training cannot be judged.

    The message names the cause: patients of the saved split table (`saved`, reused with
    `cohort.split.reuse_saved`) who are gone from the cohort, or the manifest's fixed splits
    (`fixed`), or too few patients.
    """
    missing = missing_cells(split_table)
    if not missing:
        return
    cells = ", ".join(missing)
    gone = _gone_from_saved(split_table, saved, missing)
    if gone:
        raise ValueError(
            f"no patient of {cells} after the split: the saved split table is reused "
            "(cohort.split.reuse_saved: true) and keeps every remaining patient where an "
            f"earlier run put it, but {gone} patient(s) it had in {cells} are no longer in "
            "the cohort (removed or quarantined); set cohort.split.reuse_saved: false to "
            "split all patients afresh, or add patients of that class"
        )
    if fixed is not None and len(fixed.dropna()):
        raise ValueError(
            f"no patient of {cells} after the split; add patients or change the manifest's "
            "fixed splits (its split column)"
        )
    raise ValueError(f"no patient of {cells} after the split; add patients of that class")


def _gone_from_saved(table: pd.DataFrame, saved: pd.DataFrame | None, missing: list[str]) -> int:
    """How many patients of the saved table sat in the empty cells and are gone now."""
    if saved is None or saved.empty:
        return 0
    cells = {tuple(cell.split("/")) for cell in missing}
    gone = saved[~saved["patient_id"].isin(table["patient_id"])]
    return int(sum((row.label, row.split) in cells for row in gone.itertuples()))
