import pandas as pd
import pytest

from ssc_skin.cohort import splits


def _manifest(per_class=4, images=3):
    rows = []
    for label in ("normal", "early", "late"):
        for p in range(per_class):
            for i in range(images):
                rows.append(
                    {"image_id": f"{label}{p}_{i}", "patient_id": f"{label}{p}", "label": label}
                )
    return pd.DataFrame(rows)


def test_split_is_by_patient_and_stratified():
    table = splits.split_patients(_manifest(), 0.25, 0.25, seed=0)
    assert table["patient_id"].is_unique
    assert set(table["split"]) == {"train", "val", "test"}
    for _, part in table.groupby("split"):
        assert set(part["label"]) == {"normal", "early", "late"}
    splits.assert_no_patient_leak(table)


def test_split_is_deterministic_for_a_seed():
    a = splits.split_patients(_manifest(), 0.25, 0.25, seed=5)
    b = splits.split_patients(_manifest(), 0.25, 0.25, seed=5)
    pd.testing.assert_frame_equal(a, b)


def test_too_few_patients_names_the_class():
    manifest = _manifest()
    manifest = manifest[~manifest["patient_id"].isin(["late1", "late2", "late3"])]
    with pytest.raises(ValueError, match="late=1"):
        splits.split_patients(manifest, 0.25, 0.25, seed=0)


def test_patient_under_two_labels_is_rejected():
    manifest = _manifest()
    manifest.loc[0, "label"] = "late"
    with pytest.raises(ValueError, match="more than one label"):
        splits.split_patients(manifest, 0.25, 0.25, seed=0)


def test_leak_check_catches_a_patient_in_two_splits():
    table = pd.DataFrame({"patient_id": ["a", "a"], "split": ["train", "test"]})
    with pytest.raises(ValueError, match="more than one split"):
        splits.assert_no_patient_leak(table)


@pytest.mark.parametrize("val, test", [(0.0, 0.2), (0.5, 0.5), (1.2, 0.1)])
def test_bad_fractions_are_rejected(val, test):
    with pytest.raises(ValueError, match="val_fraction"):
        splits.split_patients(_manifest(), val, test, seed=0)


# --- issue 22 finding 10: a patient removed since the saved split ------------------------------

SPLIT = {"val_fraction": 0.25, "test_fraction": 0.25, "seed": 3, "reuse_saved": True}


def _cohort_manifest(per_class=3, drop=()):
    """The node's manifest (pseudonymised columns) with identity-shaped patient ids."""
    rows = [
        {
            "patient": f"PAT_{label[0]}{p:03d}",
            "label": label,
            "fixed_split": None,
            "content_hash": f"{label}-{p}-{i}",
        }
        for label in ("normal", "late")
        for p in range(per_class)
        for i in range(2)
    ]
    return pd.DataFrame([r for r in rows if r["patient"] not in drop])


def test_a_removed_patient_names_the_reuse_option_not_the_manifest():
    saved = splits.assign_splits(_cohort_manifest(per_class=4), SPLIT)
    only_val = saved.query("label == 'normal' and split == 'val'")["patient"]
    assert len(only_val) == 1  # 4 patients per class: 2 train, 1 val, 1 test
    with pytest.raises(ValueError) as caught:
        splits.assign_splits(_cohort_manifest(per_class=4, drop=set(only_val)), SPLIT, saved)
    message = str(caught.value)
    assert "no patient of normal/val" in message
    assert "cohort.split.reuse_saved: false" in message and "no longer in the cohort" in message
    assert "manifest" not in message  # there is no manifest split column here
    assert "PAT_" not in message  # counts, never ids
    fresh = splits.assign_splits(
        _cohort_manifest(per_class=4, drop=set(only_val)), {**SPLIT, "reuse_saved": False}, saved
    )
    assert set(fresh["split"]) == {"train", "val", "test"}  # the named option works


def test_remaining_patients_keep_their_saved_split_and_new_ones_are_split():
    saved = splits.assign_splits(_cohort_manifest(per_class=5), SPLIT)
    train = saved.query("label == 'late' and split == 'train'")["patient"]
    removed = set(train[:1])  # late/train keeps others: no cell becomes empty
    grown = pd.concat(
        [
            _cohort_manifest(per_class=5, drop=removed),
            pd.DataFrame(
                [
                    {
                        "patient": "MRN-4471-Smith",
                        "label": "normal",
                        "fixed_split": None,
                        "content_hash": "new",
                    }
                ]
            ),
        ]
    )
    again = splits.assign_splits(grown, SPLIT, saved).set_index("patient")["split"]
    kept = saved.set_index("patient")["split"].drop(sorted(removed))
    pd.testing.assert_series_equal(again.drop("MRN-4471-Smith").sort_index(), kept.sort_index())
    assert again["MRN-4471-Smith"] in {"train", "val", "test"}


def test_a_fixed_split_without_patients_names_the_manifest_column():
    manifest = _cohort_manifest()
    manifest["fixed_split"] = "train"
    with pytest.raises(ValueError, match="manifest's fixed splits"):
        splits.assign_splits(manifest, {**SPLIT, "reuse_saved": False})
