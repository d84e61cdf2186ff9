import numpy as np
import pytest

from ssc_skin.cohort import synthetic
from ssc_skin.constants import MASK_CLASSES


def _cohort(seed=3, **kwargs):
    return list(
        synthetic.generate_cohort({"normal": 1, "late": 1}, 2, size=(128, 128), seed=seed, **kwargs)
    )


def test_same_seed_gives_same_bytes():
    first, second = _cohort(), _cohort()
    assert [s.image.tobytes() for s in first] == [s.image.tobytes() for s in second]
    assert [s.mask.tobytes() for s in first] == [s.mask.tobytes() for s in second]


@pytest.mark.parametrize("workers", [2, 3])
def test_sections_drawn_in_threads_equal_the_sequential_ones_in_order(workers):
    sequential, threaded = _cohort(), _cohort(workers=workers)
    assert [(s.patient_id, s.image_id) for s in threaded] == [
        (s.patient_id, s.image_id) for s in sequential
    ]
    assert [s.image.tobytes() for s in threaded] == [s.image.tobytes() for s in sequential]
    assert [s.mask.tobytes() for s in threaded] == [s.mask.tobytes() for s in sequential]


def test_different_seed_gives_different_images():
    assert _cohort(seed=1)[0].image.tobytes() != _cohort(seed=2)[0].image.tobytes()


def test_sections_have_rgb_images_and_aligned_masks():
    sections = _cohort()
    assert len(sections) == 4
    for section in sections:
        assert section.image.shape == (128, 128, 3) and section.image.dtype == np.uint8
        assert section.mask.shape == (128, 128)
        assert set(np.unique(section.mask)) <= set(MASK_CLASSES.values())
        assert (section.mask == MASK_CLASSES["dermis"]).any()
    # images of one patient share the patient id; image ids are unique
    assert len({s.image_id for s in sections}) == 4
    assert sections[0].patient_id == sections[1].patient_id != sections[2].patient_id


def test_severity_thickens_the_dermis_and_removes_fat():
    rng = np.random.default_rng(0)
    normal = synthetic.make_patient("a", "normal", rng)
    late = synthetic.make_patient("b", "late", rng)

    def shares(patient):
        masks = [
            synthetic.render_section(patient, i, (256, 256), artefact_rate=0).mask for i in range(3)
        ]
        return (
            np.mean([(m == MASK_CLASSES["dermis"]).mean() for m in masks]),
            np.mean([(m == MASK_CLASSES["fat"]).mean() for m in masks]),
        )

    normal_dermis, normal_fat = shares(normal)
    late_dermis, late_fat = shares(late)
    assert late_dermis > normal_dermis
    assert late_fat < normal_fat


def test_masson_stain_renders_collagen_blue():
    patient = synthetic.make_patient("a", "late", np.random.default_rng(0), difficulty=0.0)
    he = synthetic.render_section(patient, 0, (128, 128), "he", artefact_rate=0)
    masson = synthetic.render_section(patient, 0, (128, 128), "masson", artefact_rate=0)
    dermis = he.mask == MASK_CLASSES["dermis"]
    he_rgb = he.image[dermis].mean(axis=0)
    masson_rgb = masson.image[dermis].mean(axis=0)
    assert he_rgb[0] > he_rgb[2] - 10  # pink: red at least as strong as blue
    assert masson_rgb[2] > masson_rgb[0]  # blue collagen


def test_unknown_stain_and_label_are_rejected():
    patient = synthetic.make_patient("a", "normal", np.random.default_rng(0))
    with pytest.raises(ValueError, match="stain"):
        synthetic.render_section(patient, 0, (64, 64), stain="giemsa")
    with pytest.raises(ValueError, match="unknown labels"):
        list(synthetic.generate_cohort({"mild": 1}, 1))


def test_artefact_rates_per_name_and_unknown_names():
    assert synthetic.artefact_rates(0.2)["jpeg"] == 0.2
    rates = synthetic.artefact_rates({"blur": 1.0})
    assert rates["blur"] == 1.0 and rates["fold"] == 0.0
    with pytest.raises(ValueError, match="smudge"):
        list(synthetic.generate_cohort({"normal": 1}, 1, artefact_rate={"smudge": 0.1}))


def test_blur_artefact_softens_the_image():
    patient = synthetic.make_patient("a", "normal", np.random.default_rng(0))
    sharp = synthetic.render_section(patient, 0, (128, 128), artefact_rate=0.0).image
    blurred = synthetic.render_section(patient, 0, (128, 128), artefact_rate={"blur": 1.0}).image
    assert (
        np.abs(np.diff(blurred.astype(float), axis=1)).mean()
        < np.abs(np.diff(sharp.astype(float), axis=1)).mean()
    )
