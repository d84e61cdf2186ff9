"""The study report in Markdown, one function per section (HTML: `report_html`).

Every number says how many of how many patients (or images, patches) it covers: a metric over
the images that happened to reach the classifier must never read like one over the cohort.
The single-split report (`build_markdown`) and the cross-validation report
(`cv_report.build_cv_markdown`) share the sections.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from ssc_skin.evaluation.comparison import display_name
from ssc_skin.evaluation.report_html import FIGURES_NOTE

# Akay et al. 2021 (IEEE OJEMB), as reported: train / val / test accuracy (%) and training time.
PAPER = {
    ("binary", "mobilenetv2"): {
        "accuracy": (100.0, 96.8, 95.2),
        "time": "< 5 h (2.5 GHz i7 laptop)",
    },
    ("three_class", "mobilenetv2"): {
        "accuracy": (100.0, 97.2, 94.8),
        "time": "< 5 h (2.5 GHz i7 laptop)",
    },
    ("binary", "cnn"): {"accuracy": (100.0, 87.7, 82.9), "time": "> 14 h (2.5 GHz i7 laptop)"},
    ("binary", "densenet"): {"accuracy": (100.0, 87.7, 82.9), "time": "> 14 h (2.5 GHz i7 laptop)"},
    ("three_class", "cnn"): {"accuracy": None, "time": "not reported"},
}
Facts = dict[str, Any]


def _pct(value: float | None) -> str:
    return (
        "n/a"
        if value is None or not isinstance(value, int | float) or math.isnan(value)
        else f"{100 * value:.1f}"
    )


def _num(value: float | None) -> str:
    return (
        "n/a"
        if value is None or not isinstance(value, int | float) or math.isnan(value)
        else f"{value:.3f}"
    )


def _ci(evaluation: dict[str, Any], key: str, fmt: Callable[[float | None], str] = _pct) -> str:
    """A value with its interval, e.g. `83.3 [66.7, 100.0]`."""
    low, high = evaluation.get(f"{key}_ci_low"), evaluation.get(f"{key}_ci_high")
    value = evaluation.get(key)
    if value is None:
        return "n/a"
    if low is None or (isinstance(low, float) and math.isnan(low)):
        return fmt(value)
    return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def _of(evaluation: dict[str, Any], correct: str, total: str) -> str:
    c, n = evaluation.get(correct), evaluation.get(total)
    return f"{c}/{n}" if c is not None and n is not None else "n/a"


def _counted(ev: dict[str, Any], key: str, correct: str, total: str) -> str:
    """`77.8 (7/9) [45.3, 93.7]`: a proportion, what it counts, its interval."""
    value = _pct(ev.get(key))
    low, high = ev.get(f"{key}_ci_low"), ev.get(f"{key}_ci_high")
    interval = (
        ""
        if low is None or (isinstance(low, float) and math.isnan(low))
        else f" [{_pct(low)}, {_pct(high)}]"
    )
    return f"{value} ({_of(ev, correct, total)}){interval}"


def _model(ev: dict[str, Any]) -> str:
    return display_name(ev["architecture"])


def _split(evaluations: Iterable[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    evaluations = list(evaluations)
    return (
        [e for e in evaluations if "skipped" not in e],
        [e for e in evaluations if "skipped" in e],
    )


# ---------- sections ----------


def header_section(facts: Facts, title: str = "ssc-skin study report") -> list[str]:
    confidence = 100 * facts.get("confidence", 0.95)
    return [
        f"# {title}",
        "",
        FIGURES_NOTE,
        "",
        f"Cohort: {facts.get('cohort', 'n/a')}. Splits are by patient. Intervals are "
        f"{confidence:.0f}%: Wilson score intervals for accuracy (a proportion of test "
        "patients), percentile bootstrap intervals resampling test patients for the other "
        "metrics. Each number says how many of how many patients (or images) it covers: "
        "*assessed* counts the test images and patients a model gave a prediction for; "
        "*all* counts every test image and patient, an unassessed one as a wrong answer "
        "(intention to diagnose).",
        "",
    ]


def headline_section(
    evaluations: list[dict[str, Any]],
    heading: str = "Headline: test patients",
    intro: str | None = None,
) -> list[str]:
    """Every model on the test patients, the colour + texture peer included."""
    evaluations, skipped = _split(evaluations)
    lines = [f"## {heading}", ""]
    if intro:
        lines += [intro, ""]
    lines += [
        "| task | model | patients assessed / total | accuracy, assessed (right/n) [95% CI] "
        "| accuracy, all (right/N) [95% CI] | balanced accuracy, assessed | "
        "AUC, assessed [95% CI] | ECE (test patches) | images assessed / total (flagged) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for ev in evaluations:
        lines.append(
            f"| {ev['task']} | {_model(ev)} "
            f"| {_of(ev, 'test_patients_assessed', 'test_patients_total')} "
            f"| {_counted(ev, 'test_patient_accuracy', 'test_patient_correct', 'test_patient_n')} "
            f"| {_counted(ev, 'test_patient_accuracy_all', 'test_patient_correct_all', 'test_patient_n_all')} "
            f"| {_ci(ev, 'test_patient_balanced_accuracy')} "
            f"| {_ci(ev, 'test_patient_auc', _num)} | {_num(ev.get('test_patch_ece'))} "
            f"| {_of(ev, 'test_images_assessed', 'test_images_total')} "
            f"({ev.get('test_images_flagged', 'n/a')}) |"
        )
    lines += [f"\n{ev['task']} / {_model(ev)} skipped: {ev['skipped']}." for ev in skipped]
    lines += [
        "",
        "*colour+texture LR* is the classical peer (colour histograms, Gabor energy, "
        "local binary patterns and gradient-orientation statistics, logistic "
        "regression) trained on the same training patches: the bar the deep models have "
        "to clear. *Flagged* images were assessed from fallback patches (none passed the "
        "tissue or dermis thresholds).",
        "",
    ]
    return lines


PEER, HYBRID = "texture", "hybrid"


def _pick_on_validation(candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The candidate with the best validation patient balanced accuracy (then AUC): the way a
    recipe is chosen here, never on the test patients."""

    def key(ev: dict[str, Any]) -> tuple[float, float]:
        values = [ev.get("val_patient_balanced_accuracy"), ev.get("val_patient_auc")]
        return tuple(
            float(v) if isinstance(v, int | float) and not math.isnan(v) else -1.0 for v in values
        )

    return max(candidates, key=key) if candidates else None


def _beats(ev: dict[str, Any], peer: dict[str, Any]) -> bool:
    """At least the peer's test patient and image accuracy, and better on one of them."""
    pairs = [
        (ev.get(f"test_{level}_accuracy"), peer.get(f"test_{level}_accuracy"))
        for level in ("patient", "image")
    ]
    if any(not isinstance(a, int | float) or not isinstance(b, int | float) for a, b in pairs):
        return False
    return all(a >= b for a, b in pairs) and any(a > b for a, b in pairs)


def verdict_section(
    evaluations: list[dict[str, Any]], comparisons: dict[str, Any], confidence: float = 0.95
) -> list[str]:
    """Per task, in plain words: does the best deep model (chosen on validation patients) beat
    the colour + texture peer, and does the hybrid; with the paired test on the same patients."""
    evaluations, _ = _split(evaluations)
    lines = ["## Verdict: do the deep models beat the classical peer?", ""]
    for task in dict.fromkeys(ev["task"] for ev in evaluations):
        mine = [ev for ev in evaluations if ev["task"] == task]
        peer = next((ev for ev in mine if ev["architecture"] == PEER), None)
        deep = _pick_on_validation([ev for ev in mine if ev["architecture"] not in (PEER, HYBRID)])
        hybrid = next((ev for ev in mine if ev["architecture"] == HYBRID), None)
        if peer is None or deep is None:
            lines.append(f"- **{task}**: no peer or no deep model ran; nothing to compare.")
            continue
        for label, ev in (("best deep model", deep), ("hybrid", hybrid)):
            if ev is None:
                continue
            arch = ev["architecture"]
            pair = comparisons.get(f"{task}.{arch}_vs_{PEER}") or comparisons.get(
                f"{task}.{PEER}_vs_{arch}", {}
            )
            test = pair.get("conclusion", "no paired test")
            answer = "**yes**" if _beats(ev, peer) else "**no**"
            lines.append(
                f"- **{task}**, {label} ({_model(ev)}): beats the peer? {answer}. Patients "
                f"{_of(ev, 'test_patient_correct', 'test_patient_n')} vs "
                f"{_of(peer, 'test_patient_correct', 'test_patient_n')}, images "
                f"{_of(ev, 'test_image_correct', 'test_image_n')} vs "
                f"{_of(peer, 'test_image_correct', 'test_image_n')} right; paired test on the "
                f"same patients: {test}."
            )
    lines += [
        "",
        "*Beats* = at least the peer's test patient and image accuracy and more on one of "
        "them; the best deep model is the one with the best validation patient balanced "
        "accuracy (recipes and models are chosen on validation patients only). The paired "
        "test is McNemar on the patients only one model called right plus a paired "
        f"bootstrap {100 * confidence:.0f}% interval of the AUC difference.",
        "",
    ]
    return lines


def comparison_section(comparisons: dict[str, Any], confidence: float = 0.95) -> list[str]:
    """The paired comparisons as sentences, per task."""
    lines = ["## Paired comparison on the same patients", ""]
    if not comparisons:
        return [*lines, "Fewer than two models per task: nothing to compare.", ""]
    lines += [
        "Each pair of models on the test patients both assessed: the AUC difference "
        f"(first minus second) with a {100 * confidence:.0f}% paired bootstrap interval "
        "resampling patients, and an exact McNemar test on the patients only one of the "
        "two called right. Uncorrected for the number of pairs; with few patients, "
        '"no evidence of a difference" is not evidence of equivalence — the interval '
        "shows how large a difference the data still allow.",
        "",
    ]
    for task in dict.fromkeys(c["task"] for c in comparisons.values()):
        lines.append(f"**{task}**")
        lines.append("")
        lines += [f"- {c['sentence']}" for c in comparisons.values() if c["task"] == task]
        lines.append("")
    return lines


def accounting_section(evaluations: list[dict[str, Any]]) -> list[str]:
    """Who was not assessed, and why; shared lists printed once per task."""
    evaluations, _ = _split(evaluations)
    lines = [
        "## Every test image and patient accounted for",
        "",
        "| task | model | images assessed / total | of them flagged: tissue fallback / "
        "gating fallback | patients assessed / total | patients with a flagged image |",
        "|---|---|---|---|---|---|",
    ]
    for ev in evaluations:
        lines.append(
            f"| {ev['task']} | {_model(ev)} "
            f"| {_of(ev, 'test_images_assessed', 'test_images_total')} "
            f"| {ev.get('test_images_tissue_fallback', 'n/a')} / "
            f"{ev.get('test_images_gating_fallback', 'n/a')} "
            f"| {_of(ev, 'test_patients_assessed', 'test_patients_total')} "
            f"| {ev.get('test_patients_flagged', 'n/a')} |"
        )
    lines.append("")
    shown: set[tuple[str, str]] = set()
    any_missing = False
    for ev in evaluations:
        missing = ev.get("test_not_assessed") or {"images": [], "patients": []}
        if not missing["images"]:
            continue
        any_missing = True
        listing = tuple(sorted(f"{m['image']}: {m['reason']}" for m in missing["images"]))
        key = (ev["task"], "\n".join(listing))
        if key in shown:
            continue
        shown.add(key)
        same = [
            _model(e)
            for e in evaluations
            if e["task"] == ev["task"]
            and tuple(
                sorted(
                    f"{m['image']}: {m['reason']}"
                    for m in (e.get("test_not_assessed") or {"images": []})["images"]
                )
            )
            == listing
        ]
        lines += [f"Not assessed ({ev['task']}; {', '.join(same)}):", ""]
        lines += [
            f"- image {m['image']} (patient {m['patient']}, {m['label']}): {m['reason']}"
            for m in missing["images"]
        ]
        lines += [
            f"- **patient {m['patient']}** ({m['label']}) not assessed: {m['reason']}"
            for m in missing["patients"]
        ]
        lines.append("")
    if not any_missing:
        lines += ["Every test image was assessed by every model.", ""]
    return lines


def _paper_row(task: str, architecture: str) -> tuple[str, str]:
    reported = PAPER.get((task, architecture), {})
    acc = reported.get("accuracy")
    return (
        (" / ".join(f"{a:.1f}" for a in acc) if acc else "not reported"),
        reported.get("time", "not reported"),
    )


def paper_section(evaluations: list[dict[str, Any]]) -> list[str]:
    evaluations, _ = _split(evaluations)
    lines = [
        "## This run vs Akay et al. 2021",
        "",
        "| task | model | paper train / val / test acc (%) | ours val / test patch "
        "acc (%) | test patches | ours test patient acc (%) [95% CI] (patients) | ours "
        "test patient AUC | paper training time | ours training time (2 cores) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for ev in evaluations:
        paper_acc, paper_time = _paper_row(ev["task"], ev["architecture"])
        ours = " / ".join(_pct(ev.get(f"{s}_patch_accuracy")) for s in ("val", "test"))
        lines.append(
            f"| {ev['task']} | {_model(ev)} | {paper_acc} | {ours} "
            f"| {ev.get('test_patch_n', 'n/a')} "
            f"| {_ci(ev, 'test_patient_accuracy')} ({ev.get('test_patient_n', 'n/a')}) "
            f"| {_ci(ev, 'test_patient_auc', _num)} "
            f"| {paper_time} | {ev.get('train_seconds', 0) / 60:.1f} min |"
        )
    lines += [
        "",
        "The paper did not report its split unit; our numbers are patient-grouped, so "
        "no patient's images are in both training and test. Training patches are not "
        "predicted (no number here reads them); how well a model fits them is its training "
        "curve, `train/accuracy` in its MLflow run. The paper's baseline CNN was "
        '"densely connected": our `densenet` is that model; `cnn` is a plain stack.',
        "",
    ]
    return lines


def threshold_section(evaluations: list[dict[str, Any]]) -> list[str]:
    """Screening SSc vs normal at 0.5 and at the Youden threshold chosen on validation."""
    evaluations, _ = _split(evaluations)
    lines = [
        "## Decision threshold: 0.5 vs Youden on validation patients",
        "",
        "Screening SSc (any SSc class) vs normal from the probability of not being normal. "
        "The Youden threshold maximises sensitivity + specificity on the *validation* "
        "patients and is then applied unchanged to the test patients.",
        "",
        "| task | model | Youden threshold (val) | test patients | at 0.5: acc / sens / spec (%) "
        "| at Youden: acc / sens / spec (%) |",
        "|---|---|---|---|---|---|",
    ]
    for ev in evaluations:
        cells = []
        for name in ("default", "youden"):
            cells.append(
                " / ".join(
                    _pct(ev.get(f"test_patient_screen_{k}_{name}"))
                    for k in ("accuracy", "sensitivity", "specificity")
                )
            )
        thresholds = ev.get("youden_thresholds") or []
        shown = (
            _num(ev.get("val_patient_youden_threshold"))
            if len(thresholds) <= 1
            else f"{_num(ev.get('val_patient_youden_threshold'))} (mean of "
            + ", ".join(_num(t) for t in thresholds)
            + ")"
        )
        lines.append(
            f"| {ev['task']} | {_model(ev)} | {shown} "
            f"| {ev.get('test_patient_screen_n_youden', 'n/a')} of "
            f"{ev.get('test_patient_n', 'n/a')} | {cells[0]} | {cells[1]} |"
        )
    return [*lines, ""]


def calibration_section(
    evaluations: list[dict[str, Any]], figure: str = "reliability_diagrams.png"
) -> list[str]:
    evaluations, _ = _split(evaluations)
    lines = [
        "## Calibration",
        "",
        "Expected calibration error (ECE): the mean gap between the top-class probability "
        "and the share of right calls, over 10 confidence bins (0 = calibrated). A "
        "screening tool's probabilities are read as risks; a large ECE means they should "
        "not be.",
        "",
        "| task | model | ECE, test patches (n) | ECE, test patients (n) | Brier, test patients |",
        "|---|---|---|---|---|",
    ]
    for ev in evaluations:
        lines.append(
            f"| {ev['task']} | {_model(ev)} | {_num(ev.get('test_patch_ece'))} "
            f"({ev.get('test_patch_n', 'n/a')}) | {_num(ev.get('test_patient_ece'))} "
            f"({ev.get('test_patient_n', 'n/a')}) "
            f"| {_num(ev.get('test_patient_brier'))} |"
        )
    return [*lines, "", f"![Reliability diagrams, test patches]({figure})", ""]


def patient_metrics_section(evaluations: list[dict[str, Any]]) -> list[str]:
    evaluations, _ = _split(evaluations)
    lines = [
        "## Patient-level test metrics (assessed patients)",
        "",
        "| task | model | patients assessed / total | balanced acc [95% CI] | macro F1 | "
        "AUC | Brier | quadratic kappa |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ev in evaluations:
        lines.append(
            f"| {ev['task']} | {_model(ev)} | {_of(ev, 'test_patient_n', 'test_patients_total')} "
            f"| {_ci(ev, 'test_patient_balanced_accuracy')} "
            f"| {_pct(ev.get('test_patient_macro_f1'))} "
            f"| {_num(ev.get('test_patient_auc'))} | {_num(ev.get('test_patient_brier'))} "
            f"| {_num(ev.get('test_patient_kappa_quadratic'))} |"
        )
    lines += [
        "",
        "Per-class sensitivity / specificity of test patients (one-vs-rest), over "
        "assessed patients and, in brackets, sensitivity over all patients:",
        "",
        "| task | model | " + " | ".join(["class sens / spec (%)"] * 3) + " |",
        "|---|---|---|---|---|",
    ]
    for ev in evaluations:
        cells = [
            f"{c}: {_pct(ev.get(f'test_patient_sensitivity_{c}'))} / "
            f"{_pct(ev.get(f'test_patient_specificity_{c}'))} "
            f"({_pct(ev.get(f'test_patient_sensitivity_{c}_all'))})"
            for c in ev.get("classes", [])
        ]
        lines.append(
            f"| {ev['task']} | {_model(ev)} | " + " | ".join(cells + [""] * (3 - len(cells))) + " |"
        )
    return [*lines, ""]


def figures_section(prefix: str = "") -> list[str]:
    return [
        f"![Confusion matrices, test patients]({prefix}confusion_matrices.png)",
        "",
        f"![ROC curves, test patients]({prefix}roc_curves.png)",
        "",
    ]


def gradcam_section(evaluations: list[dict[str, Any]]) -> list[str]:
    evaluations, _ = _split(evaluations)
    lines = [
        "## Where the models look (Grad-CAM)",
        "",
        "Per class, the most confident right and wrong test image of each deep model; "
        "each patch's map is weighted by its probability for the explained class.",
        "",
    ]
    for ev in evaluations:
        if ev["architecture"] not in (PEER, HYBRID):  # no network of its own: no Grad-CAM
            name = f"{ev['task']}.{ev['architecture']}"
            lines += [f"![Grad-CAM {name}]({name}/gradcam.png)", ""]
    return lines


def training_section(evaluations: list[dict[str, Any]], curves: bool = True) -> list[str]:
    evaluations, _ = _split(evaluations)
    lines = [
        "## Training",
        "",
        *(
            ["![Training curves](training_curves.png)", ""]
            if curves
            else ["Per model, the mean over the folds (training time: their sum).", ""]
        ),
        "| task | model | weights | train patches | epochs | "
        "patches/s (steady state) | parameters |",
        "|---|---|---|---|---|---|---|",
    ]
    for ev in evaluations:
        lines.append(
            f"| {ev['task']} | {_model(ev)} | {ev.get('weights_source', 'n/a')} "
            f"| {ev.get('train_patches', 'n/a')} | {ev.get('epochs_run', 'n/a')} "
            f"| {ev.get('patches_per_second', 0):.0f} | {ev.get('parameters', 0):,} |"
        )
    return [*lines, ""]


def colour_baseline_section(facts: Facts) -> list[str]:
    lines = [
        "## How hard is the cohort? Colour-only baseline",
        "",
        "Logistic regression on per-image colour histograms, patient-grouped "
        "cross-validation over all images. Near the majority-class rate means colour alone "
        "does not separate the classes, so the models above must use tissue structure.",
        "",
        "| task | images | accuracy | balanced accuracy | majority-class rate |",
        "|---|---|---|---|---|",
    ]
    for task, result in facts.get("colour_baseline", {}).items():
        lines.append(
            f"| {task} | {result.get('images', 'all')} | {_pct(result['accuracy'])} | "
            f"{_pct(result['balanced_accuracy'])} | "
            f"{_pct(result['majority_class_rate'])} |"
        )
    return [*lines, "", "![Cohort samples](cohort_gallery.png)", ""]


def segmentation_section(segmentation: dict[str, Any]) -> list[str]:
    lines = [
        "## Segmentation (UNet, dermis)",
        "",
        "Masks the UNet learned from and is scored against: "
        + (
            ", ".join(f"{k} ({n} patches)" for k, n in segmentation.get("mask_sources", {}).items())
            or "n/a"
        )
        + ". Pseudo-masks come from colour deconvolution and are weaker than drawn ones.",
        "",
    ]
    for key in ("val_dermis_dice", "val_dermis_iou", "test_dermis_dice", "test_dermis_iou"):
        if isinstance(segmentation.get(key), int | float):
            lines.append(f"- {key.replace('_', ' ')}: {segmentation[key]:.3f}")
    return [*lines, "", "![UNet masks on test images](segmentation_overlays.png)", ""]


def ablation_section(facts: Facts) -> list[str]:
    lines = [
        "## Ablations: stain normalisation and segmentation gating",
        "",
        f"This run's stain normalisation: {facts.get('stain', 'n/a')} (fitted on "
        "training images only).",
        "",
    ]
    if facts.get("ablations"):
        return [
            *lines,
            "Separate runs of the CNNs with one setting changed (`benchmarks/ablation.py`):",
            "",
            facts["ablations"],
            "",
        ]
    return [*lines, "Not run yet: `.venv/bin/python benchmarks/ablation.py`.", ""]


def build_markdown(
    segmentation: dict[str, Any], evaluations: list[dict[str, Any]], run_facts: Facts
) -> str:
    """The single-split report: headline and paired comparison first, then the accounting of
    every test image, the paper comparison, thresholds, calibration and the detail."""
    confidence = run_facts.get("confidence", 0.95)
    lines = [
        *header_section(run_facts),
        *headline_section(evaluations),
        *verdict_section(
            evaluations, run_facts.get("comparison") or {}, run_facts.get("confidence", 0.95)
        ),
        *comparison_section(run_facts.get("comparison") or {}, confidence),
        *accounting_section(evaluations),
        *paper_section(evaluations),
        *threshold_section(evaluations),
        *calibration_section(evaluations),
        *patient_metrics_section(evaluations),
        *figures_section(),
        *gradcam_section(evaluations),
        *training_section(evaluations),
        *colour_baseline_section(run_facts),
        *segmentation_section(segmentation),
        *ablation_section(run_facts),
    ]
    return "\n".join(lines)
