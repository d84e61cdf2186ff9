

from ssc_skin.evaluation import report


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
