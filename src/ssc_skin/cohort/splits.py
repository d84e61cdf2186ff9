"""Patient-level train / validation / test splits: no patient ever crosses a split."""

from __future__ import annotations

import logging

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


def assert_every_split_has_every_class(split_table: pd.DataFrame) -> None:
    """Each class must have a patient in train, val and test, or training cannot be judged."""
    present = split_table.groupby(["label", "split"]).size()
    missing = [
        f"{label}/{split}"
        for label in sorted(split_table["label"].unique())
        for split in SPLITS
        if (label, split) not in present.index
    ]
    if missing:
        raise ValueError(
            "no patient of " + ", ".join(missing) + " after the split; add "
            "patients or change the manifest's fixed splits"
        )
