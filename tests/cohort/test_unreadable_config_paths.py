"""Issue 22, item 3: an empty manifest and a manifest path longer than the OS allows stop the
run with one CohortConfigError naming the key; the too-long path itself is never printed."""

import pytest

from ssc_skin.cohort import ingest
from ssc_skin.cohort.config import validate_parameters
from ssc_skin.cohort.ingest import CohortConfigError

LONG = "MRN-4471-Smith_JohnSmith_DOB19700101" * 12 + ".csv"  # > 255 bytes: ENAMETOOLONG


@pytest.mark.parametrize("text", ["", "\n\n"])
def test_an_empty_manifest_is_one_message(tmp_path, text):
    manifest = tmp_path / "PAT_0042.csv"
    manifest.write_text(text)
    with pytest.raises(CohortConfigError, match=r"^cohort\.source\.manifest is empty$"):
        ingest.discover_cohort({"layout": "manifest", "manifest": str(manifest)})  # no name


def test_a_too_long_manifest_path_is_one_message_without_the_path(tmp_path):
    source = {"layout": "manifest", "manifest": str(tmp_path / LONG)}
    with pytest.raises(CohortConfigError) as error:
        ingest.discover_cohort(source)
    assert "cohort.source.manifest is longer than this system allows" in str(error.value)
    assert "Smith" not in str(error.value)
    with pytest.raises(CohortConfigError) as error:
        validate_parameters({"cohort": {"source": source}}, check_paths=True)
    assert "cohort.source.manifest is longer than this system allows" in str(error.value)
    assert "Smith" not in str(error.value)


def test_a_too_long_folder_root_is_one_message_without_the_path(tmp_path):
    source = {"layout": "folder", "root": str(tmp_path / LONG)}
    with pytest.raises(CohortConfigError) as error:
        validate_parameters({"cohort": {"source": source}}, check_paths=True)
    assert "cohort.source.root is longer than this system allows" in str(error.value)
    assert "Smith" not in str(error.value)
