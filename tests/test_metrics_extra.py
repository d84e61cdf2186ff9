import math

import numpy as np

from ssc_skin import metrics, report


def test_confusion_keeps_absent_classes_as_plain_ints():
    result = metrics.confusion(np.array([0, 1, 1]), np.array([0, 1, 0]), n_classes=3)
    assert result == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert all(type(v) is int for row in result for v in row)


def test_sensitivity_and_specificity_one_vs_rest():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    result = metrics.per_class_sensitivity_specificity(y_true, y_pred, ["normal", "early", "late"])
    assert result["sensitivity_normal"] == 2 / 3 and result["specificity_normal"] == 1.0
    assert result["sensitivity_early"] == 0.5 and result["specificity_early"] == 3 / 4
    assert result["sensitivity_late"] == 1.0 and result["specificity_late"] == 4 / 5
    assert list(result) == ["sensitivity_normal", "specificity_normal", "sensitivity_early",
                            "specificity_early", "sensitivity_late", "specificity_late"]


def test_undefined_rates_are_nan():
    result = metrics.per_class_sensitivity_specificity(np.array([0, 0]), np.array([0, 1]),
                                                       ["normal", "ssc"])
    assert result["sensitivity_normal"] == 0.5
    assert math.isnan(result["sensitivity_ssc"])  # no ssc example
    assert math.isnan(result["specificity_normal"])  # no non-normal example
    assert result["specificity_ssc"] == 0.5


def test_markdown_to_html_is_a_standalone_page_with_tables_and_relative_images():
    text = "# Report\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![ROC](figures/roc.png)\n"
    page = report.markdown_to_html(text, "ssc <skin> & report")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<title>ssc &lt;skin&gt; &amp; report</title>" in page
    assert "<table>" in page and "<td>1</td>" in page and "<style>" in page
    assert 'src="figures/roc.png"' in page and "<base" not in page
    assert '<meta charset="utf-8">' in page


def test_the_study_report_renders_to_html():
    evaluation = {"task": "binary", "architecture": "cnn", "train_seconds": 60.0,
                  "weights_source": "random", "train_patches": 10, "epochs_run": 1,
                  "patches_per_second": 5.0, "parameters": 1000}
    markdown_text = report.build_markdown({"test_dermis_dice": 0.5}, [evaluation], {})
    page = report.markdown_to_html(markdown_text, "ssc-skin study report")
    separators = [line for line in markdown_text.splitlines() if line.startswith("|---")]
    assert page.count("<table>") == len(separators) >= 3
    assert "<h1>ssc-skin study report</h1>" in page
