from pathlib import Path

import yaml

from ssc_skin.evaluation import cv_report, report, report_html, scoring

from .conftest import BINARY, PARAMS, make_cohort


def test_markdown_to_html_is_a_standalone_page_with_tables_and_relative_images():
    text = "# Report\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![ROC](figures/roc.png)\n"
    page = report_html.markdown_to_html(text, "ssc <skin> & report")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<title>ssc &lt;skin&gt; &amp; report</title>" in page
    assert "<table>" in page and "<td>1</td>" in page and "<style>" in page
    assert 'src="figures/roc.png"' in page and "<base" not in page
    assert '<meta charset="utf-8">' in page


def test_the_study_report_renders_to_html():
    evaluation = {
        "task": "binary",
        "architecture": "cnn",
        "train_seconds": 60.0,
        "weights_source": "random",
        "train_patches": 10,
        "epochs_run": 1,
        "patches_per_second": 5.0,
        "parameters": 1000,
    }
    markdown_text = report.build_markdown({"test_dermis_dice": 0.5}, [evaluation], {})
    page = report_html.markdown_to_html(markdown_text, "ssc-skin study report")
    separators = [line for line in markdown_text.splitlines() if line.startswith("|---")]
    assert page.count("<table>") == len(separators) >= 3
    assert "<h1>ssc-skin study report</h1>" in page


def _evaluation(arch="cnn", **extra):
    predictions, selection = make_cohort()
    lost = selection["image"] == "im-test1-0"
    selection.loc[lost, ["selection", "reason"]] = ["not_assessable", "no tissue tile"]
    selection.loc[selection["image"] == "im-test2-0", "selection"] = "gating_fallback"
    predictions = predictions[predictions["image"] != "im-test1-0"]
    return {
        "task": "binary",
        "architecture": arch,
        "classes": ["normal", "ssc"],
        "train_seconds": 60.0,
        "weights_source": "random",
        "train_patches": 10,
        "epochs_run": 1,
        "patches_per_second": 5.0,
        "parameters": 1000,
        **scoring.score_model(predictions, selection, BINARY, PARAMS),
        **extra,
    }


def test_headline_says_how_many_of_how_many_each_number_covers():
    text = report.build_markdown({}, [_evaluation(), _evaluation("texture")], {})
    headline = text.split("## Headline")[1].split("\n## ")[0]
    rows = [line for line in headline.splitlines() if line.startswith("| binary")]
    assert len(rows) == 2 and "colour+texture LR" in rows[1]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] == "4/4"  # patients assessed / total
        assert "(4/4)" in cells[3] and "(4/4)" in cells[4]  # right / n, right / N
        assert cells[-1] == "7/8 (1)"  # images assessed / total (flagged)


def test_report_lists_each_unassessed_image_with_its_reason_once_per_task():
    text = report.build_markdown({}, [_evaluation(), _evaluation("mobilenetv2")], {})
    assert text.count("image im-test1-0 (patient pt-test1, early): no tissue tile") == 1
    assert "Not assessed (binary; CNN, MobileNetV2)" in text


def test_comparison_threshold_and_calibration_sections_are_written():
    comparison = {"binary.cnn_vs_texture": {"task": "binary", "sentence": "CNN vs X: ok."}}
    text = report.build_markdown({}, [_evaluation()], {"comparison": comparison})
    assert "- CNN vs X: ok." in text
    assert "Youden threshold (val)" in text and "## Calibration" in text
    assert "![Reliability diagrams, test patches](reliability_diagrams.png)" in text


def test_cv_report_has_the_pooled_headline_and_the_fold_spread():
    folds = {
        "binary.cnn": [
            _evaluation(test_patient_accuracy=0.5, test_patient_n=2),
            _evaluation(test_patient_accuracy=1.0, test_patient_n=2),
        ]
    }
    text = cv_report.build_cv_markdown([_evaluation()], folds, {"folds": 2, "comparison": {}})
    assert "## Headline: every patient, pooled out-of-fold" in text
    assert "2-fold patient-grouped" in text
    assert "75.0 ± 35.4 (50.0–100.0)" in text and "50.0 (2), 100.0 (2)" in text


def test_html_embeds_the_figures_it_is_given_and_leaves_the_others():
    text = "![a](a.png)\n\n![b](sub/b.png)\n"
    assert report_html.image_links(text + "![a](a.png)") == ["a.png", "sub/b.png"]
    page = report_html.markdown_to_html(text, "t", images={"a.png": "data:image/png;base64,AAAA"})
    assert 'src="data:image/png;base64,AAAA"' in page and 'src="sub/b.png"' in page
    assert 'src="a.png"' not in page


def test_grad_cam_is_shown_for_the_deep_models_only():
    evaluations = [_evaluation(), _evaluation("texture"), _evaluation("hybrid")]
    links = report_html.image_links(report.build_markdown({}, evaluations, {}))
    assert "binary.cnn/gradcam.png" in links
    assert not [link for link in links if "texture/" in link or "hybrid/" in link]


def test_the_markdown_points_to_report_html_which_leaves_the_pointer_out():
    """MLflow's artifact view cannot load report.md's images: the Markdown says so under its
    title and names report.html, which embeds them; the page itself does not repeat it."""
    for text in (
        report.build_markdown({}, [_evaluation()], {}),
        cv_report.build_cv_markdown([_evaluation()], {"binary.cnn": [_evaluation()]}, {}),
    ):
        lines = text.split("\n")
        assert lines[0].startswith("# ssc-skin") and lines[2] == report_html.FIGURES_NOTE
        assert "`report.html`" in report_html.FIGURES_NOTE
        page = report_html.markdown_to_html(text, "t")
        assert "Figures: open" not in page and "report.html" not in page
        assert "<h1>ssc-skin" in page and "Cohort:" in page


def test_every_report_image_is_an_mlflow_artifact_at_the_same_relative_path():
    """report.md opened from the MLflow artifact folder shows its images: each link is the
    artifact path of a catalog entry that logs that figure."""
    root = Path(__file__).resolve().parents[2]
    catalog = {}
    for name in ("catalog.yml", "catalog_export_predict.yml"):
        path = root / "conf" / "base" / name
        if path.exists():
            catalog.update(yaml.safe_load(path.read_text()))
    artifacts = set()
    for entry in catalog.values():
        if isinstance(entry, dict) and entry.get("type", "").endswith("MlflowArtifactDataset"):
            filepath = Path(entry["dataset"]["filepath"])
            folder = entry.get("artifact_path")
            artifacts.add(f"{folder}/{filepath.name}" if folder else filepath.name)
    text = report.build_markdown({}, [_evaluation()], {})
    for link in report_html.image_links(text):
        pattern = link.replace("binary.cnn", "{task}.{arch}")
        assert link in artifacts or pattern in artifacts, link


def test_cv_report_links_only_figures_the_cv_pipeline_makes():
    text = cv_report.build_cv_markdown(
        [_evaluation()], {"binary.cnn": [_evaluation()]}, {"folds": 2}
    )
    assert set(report_html.image_links(text)) == {
        "confusion_matrices.png",
        "roc_curves.png",
        "reliability_diagrams.png",
    }
