"""The "Where the CNN looks" section: Grad-CAM localisation of the explained image candidates.

Read from ``localisation.csv`` (``explain.gradcam``, ``run --explain``) pooled over folds
(``evaluate.localisation.summary_table``). Only a run asked to explain has the table; without
it the section is left out, unless the run explained without sign regions (a real cohort),
which the section then says.
"""

from __future__ import annotations

from benchmark.report.explain_files import ExplainFiles
from benchmark.report.findings.tables import _Run
from benchmark.report.findings.wording import fmt

TITLE = "Where the CNN looks"


def _pm(row, metric: str) -> str:
    return f"{fmt(row[metric])} \u00b1 {fmt(row.get(f'{metric}_se'))}"


def saliency_section(run: _Run, ex: ExplainFiles | None) -> list[str]:
    """The section's markdown lines, or [] when the run was not asked to explain."""
    config = run.manifest.get("config") or {}
    loc = None if ex is None else ex.localisation
    if loc is None or loc.empty:
        if not config.get("explain"):
            return []
        return [f"## {TITLE}", "", "Saliency maps were written (patient data, in the run's `patient_data/` folder, "
                "not linked from this page), but localisation is not scored: the cohort has no sign regions (only "
                "a synthetic cohort knows where its signs are drawn)."]
    from benchmark.evaluate.localisation import summary_table

    table = summary_table(loc)
    layer = loc["layer"].iloc[0] if "layer" in loc.columns else "?"
    grid = int(loc["grid"].iloc[0]) if "grid" in loc.columns else 0
    size = int(loc["image_size"].iloc[0]) if "image_size" in loc.columns else 0
    best = run.best.get("image")
    lines = [f"## {TITLE}", "",
             f"Grad-CAM towards each test patient's own class (AFF: the logit; NFF: minus the logit) at the stage "
             f"`{layer}` ({grid} x {grid} at {size} px: the deepest stage at least 7 x 7), averaged over the "
             "predictor's models, scored against the synthetic cohort's sign regions (the fracture line, the medial "
             "spike, the lateral cortex where beaking shows, comminution fragments): the **pointing game** (the "
             "share of images whose map peaks inside a region) and the **share** of the map's mass inside the "
             "regions, means over patients \u00b1 their standard errors, beside a random map as coarse as "
             "Grad-CAM's and the regions' area share (what a map that ignored the image would reach). The maps "
             "themselves are patient data: they are in the run's `patient_data/` folder, not on this page.", ""]
    for _, r in table.iterrows():
        tag = " (the best image model)" if best is not None and r["candidate"] == best["candidate"] else ""
        lines.append(f"- **{r['candidate']}**{tag}, {r['cls']} ({int(r['n_patients'])} patients, {int(r['n_images'])} "
                     f"images): pointing game {_pm(r, 'hit')} against {_pm(r, 'hit_random')} for a random map; share "
                     f"inside {_pm(r, 'share')} against {_pm(r, 'share_random')} (area share {fmt(r['area'])}).")
    return lines
