import os

import pandas as pd

from ssc_skin.cohort.privacy import hide_quarantine, pseudonym, redact_params

KEY = "key"


def test_pseudonym_is_stable_keyed_and_hides_the_id():
    a = pseudonym("Smith-1987-001", "key")
    assert a == pseudonym("Smith-1987-001", "key")
    assert a != pseudonym("Smith-1987-001", "other-key")
    assert a != pseudonym("Smith-1987-002", "key")
    assert "Smith" not in a and "001" not in a


def test_pseudonym_of_a_name_that_is_not_utf8():
    """Python keeps undecodable file-name bytes as lone surrogates; hashing must not fail."""
    name = os.fsdecode(b"P1_caf\xe9.png")
    assert pseudonym(name, KEY) == pseudonym(name, KEY) != pseudonym("P1_cafe.png", KEY)


def _im(path):
    return "im-" + pseudonym(path, KEY)[3:]


def _records(rows):
    return pd.DataFrame(rows, columns=["relative_path", "patient_id", "mask_relative_path"])


def _hide(quarantine_rows, record_rows, **options):
    quarantine = pd.DataFrame(quarantine_rows, columns=["file", "check", "reason"])
    return hide_quarantine(quarantine, _records(record_rows), KEY, **options)


def test_common_words_in_reasons_are_never_rewritten():
    """`image_01.png` gives patient `image`: 'not an image' must stay as it is."""
    report, _ = _hide(
        [("normal/image_01.png", "not_an_image", "not an image (format not recognised)")],
        [("normal/image_01.png", "image", None)],
        label_folders=True,
        labels=("normal",),
    )
    assert report.loc[0, "reason"] == "not an image (format not recognised)"
    assert (
        report.loc[0, "file"]
        == f"normal/{pseudonym('image', KEY)}_{_im('normal/image_01.png')}.png"
    )


def test_paths_inside_reasons_are_pseudonymised_like_the_file_column():
    report, _ = _hide(
        [
            ("normal/P1_b.png", "duplicate", "duplicate of normal/P1_a.png"),
            (
                "masks/M1.png",
                "mask",
                "mask file missing; image normal/P1_a.png kept without a mask",
            ),
        ],
        [("normal/P1_a.png", "P1", "masks/M1.png"), ("normal/P1_b.png", "P1", None)],
        label_folders=True,
        labels=("normal",),
    )
    p1 = pseudonym("P1", KEY)
    assert list(report["reason"]) == [
        f"duplicate of normal/{p1}_{_im('normal/P1_a.png')}.png",
        f"mask file missing; image normal/{p1}_{_im('normal/P1_a.png')}.png kept without a mask",
    ]
    assert "P1" not in report.to_csv()


def test_no_raw_id_from_any_layout_reaches_the_report():
    rows = [
        # <label>/<patient>/<file> read by file name: the folder is an id nobody declared
        ("normal/SMITH07/slideA.png", "slideA", None),
        # a name the regex cannot read: no id known, the whole name is hidden
        ("normal/_PATIENTX.png", None, None),
        # a lowercase variant of a known id, in the name of another patient's file
        ("ssc/X9_jones42.png", "X9", None),
        ("ssc/JONES42_a.png", "JONES42", None),
        # an unknown label folder that is itself a patient id
        ("DOE99/DOE99_a.png", "DOE99", None),
    ]
    quarantine = [(path, "corrupt", "corrupt image data") for path, _, _ in rows]
    report, linkage = _hide(quarantine, rows, label_folders=True, labels=("normal", "ssc"))
    text = report.to_csv()
    for raw in ("SMITH07", "PATIENTX", "jones42", "JONES42", "DOE99"):
        assert raw.lower() not in text.lower(), raw
    assert report["file"].str.startswith(("normal/", "ssc/", "pt-")).all()  # labels stay
    assert report.loc[1, "file"].startswith("normal/im-") and report.loc[1, "file"].endswith(".png")
    # the local linkage maps every shown name back to the file
    assert dict(zip(linkage["file"], linkage["relative_path"], strict=True)) == dict(
        zip(report["file"], [r[0] for r in rows], strict=True)
    )


def test_without_patient_ids_every_name_is_hidden():
    """predict.patient_ids=false: no id is known, so no file name can be shown."""
    report, _ = _hide(
        [
            ("SMITH07_a.png", "truncated", "truncated image data"),
            ("batch2/JONES42.tif", "corrupt", "corrupt image data"),
        ],
        [("SMITH07_a.png", None, None), ("batch2/JONES42.tif", None, None)],
        label_folders=False,
    )
    assert "SMITH07" not in report.to_csv() and "JONES42" not in report.to_csv()
    assert "batch2" not in report.to_csv()
    assert report.loc[0, "file"].startswith("im-") and report.loc[1, "file"].endswith(".tif")


def test_redact_params_replaces_user_paths_by_a_keyed_hash():
    params = {
        "cohort": {
            "source": {
                "layout": "folder",
                "root": "/home/ann/SMITH07_biopsies",
                "manifest": "study/manifest.csv",
                "label_map": {},
            },
            "checks": {"min_tissue_fraction": 0.05},
            "split": {"saved_table": "data/03_primary/patient_splits.csv"},
        },
        "predict": {"input": "new/SMITH07_a.png", "tasks": None},
    }
    redacted = redact_params(params, KEY)
    source = redacted["cohort"]["source"]
    assert source["root"].startswith("path-") and "SMITH07" not in str(redacted)
    assert source["manifest"].startswith("path-")
    assert redacted["predict"]["input"].startswith("path-")
    assert (
        source["layout"] == "folder" and redacted["cohort"]["checks"] == params["cohort"]["checks"]
    )
    assert redacted["cohort"]["split"]["saved_table"] == "data/03_primary/patient_splits.csv"
    assert params["cohort"]["source"]["root"] == "/home/ann/SMITH07_biopsies"  # not mutated
    # flattened keys (as kedro-mlflow logs them) and any absolute path are redacted too
    flat = redact_params({"cohort.source.root": "x/y", "other": "/abs/path", "n": 3}, KEY)
    assert flat["cohort.source.root"].startswith("path-")
    assert flat["other"].startswith("path-") and flat["n"] == 3


# --- issue 22, item 2: no part of a user's file or folder name reaches the report -----------

IDENTITY_NAMES = [
    # (relative path, the patient id the regex read, parts that must not show)
    ("normal/PAT_0042_JohnSmith_DOB19700101_white.png", "PAT_0042", ["John", "Smith", "1970"]),
    ("normal/PAT_0042 (Jane Doe) white.png", "PAT_0042", ["Jane", "Doe", "white"]),
    ("Müller/PAT_0042_Müller.png", "PAT_0042", ["Müller", "M\\xfc"]),
    ("johnson_DOB-1970-01-01_white.png", None, ["johnson", "1970", "white"]),
    ("secret_MRN-9999-Outsider.png", None, ["secret", "9999", "Outsider"]),
    ("normal/MRN-4471-Smith_u.png", "MRN", ["4471", "Smith"]),
]


def test_no_part_of_a_file_or_folder_name_shows_in_the_report():
    rows = [(path, "outside_root", f"{path} leads outside") for path, _, _ in IDENTITY_NAMES]
    records = [(path, patient, None) for path, patient, _ in IDENTITY_NAMES]
    report, linkage = _hide(rows, records, label_folders=True, labels=("normal",))
    text = report.to_csv()
    for path, patient, hidden in IDENTITY_NAMES:
        for part in hidden + ([patient] if patient else []):
            assert part not in text, (part, path)
    assert all(f.split("/")[-1].startswith(("pt-", "im-")) for f in report["file"])
    assert list(linkage["relative_path"]) == [path for path, _, _ in IDENTITY_NAMES]
    # the same file keeps the same pseudonym in the file column and in its reason
    assert all(r.startswith(f + " ") for f, r in zip(report["file"], report["reason"], strict=True))
