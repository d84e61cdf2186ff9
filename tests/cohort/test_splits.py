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
