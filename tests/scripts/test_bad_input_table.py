"""scripts/bad_input_table.py: a few of its cases, run as the script runs them (no TensorFlow:
cohort cases only), give the project's messages, keep the user folder and catch a leak."""

from __future__ import annotations

import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT / "scripts"))
import bad_input_table as table  # noqa: E402


def _run(kind: str, tmp_path: Path) -> table.Row:
    case = next(c for c in table.cases(rows=30) if c.kind == kind)
    return table.run_case(case, tmp_path)


def test_a_config_typo_an_empty_manifest_and_an_empty_file(tmp_path):
    typo = _run("typo_engine", tmp_path / "a")
    assert typo.outcomes[0].check == "CohortConfigError"
    assert (
        "engine.n_worker is not a known key; did you mean 'n_workers'?" in typo.outcomes[0].message
    )
    empty = _run("empty_manifest", tmp_path / "b")
    assert [(o.check, o.message) for o in empty.outcomes] == [
        ("CohortConfigError", "cohort.source.manifest is empty")
    ]
    hidden = _run("empty_file", tmp_path / "c")
    assert [o.check for o in hidden.outcomes] == ["empty_file"]
    assert hidden.outcomes[0].message.endswith(": empty file (0 bytes)")
    for row in (typo, empty, hidden):
        assert row.unchanged and not row.leaks and row.crashed is None


def test_the_markdown_row_and_the_leak_check(tmp_path):
    row = _run("large_manifest", tmp_path)
    assert {o.check for o in row.outcomes} == {"file_missing", "not_an_image"}
    text = table.markdown([row], [])
    assert "| manifest of 30 rows: 90% missing files, 10% unreadable | 4 | `" in text
    assert table.leaks(["cohort.source.manifest is not a file (PAT_0042.csv)"], tmp_path)
    assert table.leaks([f"see {tmp_path}/x"], tmp_path)
    assert not table.leaks(["cohort.source.manifest is empty"], tmp_path)
