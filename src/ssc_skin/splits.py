"""Patient-level train / validation / test splits: no patient ever crosses a split."""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import train_test_split

SPLITS = ("train", "val", "test")


def patient_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per patient with their label; a patient under two labels is an error."""
    labels = manifest.groupby("patient_id")["label"].unique()
    conflicting = labels[labels.map(len) > 1]
    if len(conflicting):
        raise ValueError(f"{len(conflicting)} patient(s) appear under more than one label; "
                         "fix the manifest before splitting")
    return labels.map(lambda values: values[0]).rename("label").reset_index()


def split_patients(manifest: pd.DataFrame, val_fraction: float, test_fraction: float,
                   seed: int) -> pd.DataFrame:
    """Stratified (by label) split of patients; returns columns patient_id, label, split."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError("split fractions must be in (0, 1) and sum below 1, got "
                         f"val_fraction={val_fraction}, test_fraction={test_fraction}")
    patients = patient_table(manifest)
    counts = patients["label"].value_counts()
    too_few = counts[counts < len(SPLITS)]
    if len(too_few):
        raise ValueError("each class needs at least 3 patients (one per split); too few in: "
                         + ", ".join(f"{label}={n}" for label, n in too_few.items()))
    n_classes = len(counts)
    n_test = max(n_classes, round(test_fraction * len(patients)))
    n_val = max(n_classes, round(val_fraction * len(patients)))
    rest, test = train_test_split(patients, test_size=n_test, stratify=patients["label"],
                                  random_state=seed)
    train, val = train_test_split(rest, test_size=n_val, stratify=rest["label"],
                                  random_state=seed)
    table = pd.concat([train.assign(split="train"), val.assign(split="val"),
                       test.assign(split="test")])
    return table.sort_values("patient_id").reset_index(drop=True)


def assert_no_patient_leak(split_table: pd.DataFrame) -> None:
    """Fail loudly if any patient is assigned to more than one split."""
    per_patient = split_table.groupby("patient_id")["split"].nunique()
    leaked = per_patient[per_patient > 1]
    if len(leaked):
        raise ValueError(f"{len(leaked)} patient(s) appear in more than one split")
