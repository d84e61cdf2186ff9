"""The study report in Markdown: our models next to the paper's reported numbers."""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from typing import Any

import markdown

# Akay et al. 2021 (IEEE OJEMB), as reported: train / val / test accuracy (%) and training time.
PAPER = {
    ("binary", "mobilenetv2"): {"accuracy": (100.0, 96.8, 95.2), "time": "< 5 h (2.5 GHz i7 laptop)"},
    ("three_class", "mobilenetv2"): {"accuracy": (100.0, 97.2, 94.8), "time": "< 5 h (2.5 GHz i7 laptop)"},
    ("binary", "cnn"): {"accuracy": (100.0, 87.7, 82.9), "time": "> 14 h (2.5 GHz i7 laptop)"},
    ("three_class", "cnn"): {"accuracy": None, "time": "not reported"},
}


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _num(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def _ci(evaluation: dict[str, Any], key: str, fmt: Callable[[float | None], str] = _pct) -> str:
    """A value with its bootstrap interval, e.g. `83.3 [66.7, 100.0]`."""
    low, high = evaluation.get(f"{key}_ci_low"), evaluation.get(f"{key}_ci_high")
    value = evaluation.get(key)
    if value is None:
        return "n/a"
    if low is None or math.isnan(low):
        return fmt(value)
    return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def _paper_row(task: str, architecture: str) -> tuple[str, str]:
    reported = PAPER.get((task, architecture), {})
    acc = reported.get("accuracy")
    return ((" / ".join(f"{a:.1f}" for a in acc) if acc else "not reported"),
            reported.get("time", "not reported"))


def build_markdown(segmentation: dict[str, Any], evaluations: list[dict[str, Any]],
                   run_facts: dict[str, Any]) -> str:
    """Render the report: paper comparison first, then patient-level detail and segmentation."""
    skipped = [ev for ev in evaluations if "skipped" in ev]
    evaluations = [ev for ev in evaluations if "skipped" not in ev]
    lines = [
        "# ssc-skin study report",
        "",
        f"Cohort: {run_facts.get('cohort', 'n/a')}. Splits are by patient. Intervals are 95%: "
        "Wilson score intervals for accuracy (a proportion of test patients), percentile "
        "bootstrap intervals resampling test patients for the other metrics.",
        "",
        "## This run vs Akay et al. 2021",
        "",
        "| task | model | paper train / val / test acc (%) | ours train / val / test patch acc (%) "
        "| ours test patient acc (%) [95% CI] | ours test patient AUC | paper training time "
        "| ours training time (2 cores) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ev in evaluations:
        paper_acc, paper_time = _paper_row(ev["task"], ev["architecture"])
        ours = " / ".join(_pct(ev.get(f"{s}_patch_accuracy")) for s in ("train", "val", "test"))
        lines.append(
            f"| {ev['task']} | {ev['architecture']} | {paper_acc} | {ours} "
            f"| {_ci(ev, 'test_patient_accuracy')} | {_ci(ev, 'test_patient_auc', _num)} "
            f"| {paper_time} | {ev['train_seconds'] / 60:.1f} min |")
    lines += [f"\n{ev['task']} / {ev['architecture']} skipped: {ev['skipped']}." for ev in skipped]
    lines += ["", "The paper did not report its split unit; our numbers are patient-grouped, so "
              "no patient's images are in both training and test.", "",
              "## Patient-level test metrics", "",
              "| task | model | patients | balanced acc [95% CI] | macro F1 | AUC | Brier | "
              "quadratic kappa |", "|---|---|---|---|---|---|---|---|"]
    for ev in evaluations:
        kappa = ev.get("test_patient_kappa_quadratic")
        lines.append(
            f"| {ev['task']} | {ev['architecture']} | {ev.get('test_patients', 'n/a')} "
            f"| {_ci(ev, 'test_patient_balanced_accuracy')} | {_pct(ev.get('test_patient_macro_f1'))} "
            f"| {_num(ev.get('test_patient_auc'))} | {_num(ev.get('test_patient_brier'))} "
            f"| {_num(kappa)} |")
    lines += ["", "Per-class sensitivity / specificity of test patients (one-vs-rest):", "",
              "| task | model | " + " | ".join(["class sens / spec (%)"] * 3) + " |",
              "|---|---|---|---|---|"]
    for ev in evaluations:
        cells = [f"{c}: {_pct(ev.get(f'test_patient_sensitivity_{c}'))} / "
                 f"{_pct(ev.get(f'test_patient_specificity_{c}'))}" for c in ev.get("classes", [])]
        lines.append(f"| {ev['task']} | {ev['architecture']} | "
                     + " | ".join(cells + [""] * (3 - len(cells))) + " |")
    lines += ["", "![Confusion matrices, test patients](confusion_matrices.png)", "",
              "![ROC curves, test patients](roc_curves.png)", "",
              "## Where the models look (Grad-CAM)", "",
              "Per class, the most confident right and wrong test image of each model; each "
              "patch's map is weighted by its probability for the explained class.", ""]
    for ev in evaluations:
        name = f"{ev['task']}.{ev['architecture']}"
        lines += [f"![Grad-CAM {name}]({name}/gradcam.png)", ""]
    lines += ["## Training", "", "![Training curves](training_curves.png)", "",
              "| task | model | weights | train patches | epochs | "
              "patches/s (steady state) | parameters |", "|---|---|---|---|---|---|---|"]
    for ev in evaluations:
        lines.append(f"| {ev['task']} | {ev['architecture']} | {ev['weights_source']} "
                     f"| {ev['train_patches']} | {ev['epochs_run']} "
                     f"| {ev['patches_per_second']:.0f} | {ev['parameters']:,} |")
    lines += ["", "## How hard is the cohort? Colour-only baseline", "",
              "Logistic regression on per-image colour histograms, patient-grouped "
              "cross-validation. Near the majority-class rate means colour alone does not "
              "separate the classes, so the models above must use tissue structure.", "",
              "| task | accuracy | balanced accuracy | majority-class rate |", "|---|---|---|---|"]
    for task, result in run_facts.get("colour_baseline", {}).items():
        lines.append(f"| {task} | {_pct(result['accuracy'])} | "
                     f"{_pct(result['balanced_accuracy'])} | {_pct(result['majority_class_rate'])} |")
    lines += ["", "![Cohort samples](cohort_gallery.png)",
              "", "## Segmentation (UNet, dermis)", "",
              "Masks the UNet learned from and is scored against: "
              + (", ".join(f"{k} ({n} patches)" for k, n in
                           segmentation.get("mask_sources", {}).items()) or "n/a")
              + ". Pseudo-masks come from colour deconvolution and are weaker than drawn ones.",
              ""]
    for key in ("val_dermis_dice", "val_dermis_iou", "test_dermis_dice", "test_dermis_iou"):
        if key in segmentation:
            lines.append(f"- {key.replace('_', ' ')}: {segmentation[key]:.3f}")
    lines += ["", "![UNet masks on test images](segmentation_overlays.png)", "",
              "## Ablations: stain normalisation and segmentation gating", "",
              f"This run's stain normalisation: {run_facts.get('stain', 'n/a')} (fitted on "
              "training images only).", ""]
    if run_facts.get("ablations"):
        lines += ["Separate runs of the CNNs with one setting changed "
                  "(`benchmarks/ablation.py`):", "", run_facts["ablations"]]
    else:
        lines.append("Not run yet: `.venv/bin/python benchmarks/ablation.py`.")
    lines.append("")
    return "\n".join(lines)


_HTML_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto;
       padding: 0 1rem; line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; height: auto; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""


def markdown_to_html(markdown_text: str, title: str) -> str:
    """The report as one standalone HTML page to open in a browser. Image paths are left as
    written, so figures referenced relatively load when the page sits beside them."""
    body = markdown.markdown(markdown_text, extensions=["tables"], output_format="html")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_HTML_STYLE}</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")
