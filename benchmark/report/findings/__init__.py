"""Answers to the three questions, written from a run's stored tables.

Reads ``leaderboard.csv``, ``comparisons.csv``, ``studies.csv`` and ``manifest.json``
(all but the leaderboard optional) through ``run_files`` and never recomputes a metric:
every number in the text is a cell of those files (or of the manifest's profile), formatted with ``wording.fmt``
(3 decimals; p-values below 0.001 are written ``< 0.001``), besides the fixed rule
constants (``tables``, ``q3_fusion``, ``assemble``: 0.5 for chance, 90 % specificity, the learning-curve points 25/50/100 %).

``findings.md`` opens with **Answers**: one sentence per question, its key number and CI,
and the caveat that changes its meaning. The rules behind each claim:

- A paired comparison row (``comparisons.csv``) is read as *better* (verdict
  ``candidate_better`` and ``p_holm < 0.05``), *worse* (``reference_better`` and
  ``p_holm < 0.05``), *equivalent* (verdict ``equivalent``: the data rule out a difference
  larger than the stated margin) or *not shown* (anything else, with the interval: "the
  data still allow a difference from lo to hi", or, when that unadjusted interval excludes
  zero but Holm's p does not, "its own 95 % interval ... excludes no difference, but not after
  adjusting for the run's other comparisons"). "No" is said only for *equivalent*;
  nothing is inferred from overlapping or separate intervals.
- Q1, images alone: the best image model by inner-CV score, its AUC with CI; *at chance*
  when that CI includes 0.5; sensitivity at 90 % specificity with the threshold set on
  out-of-fold data (deployable) next to the test-set threshold (optimistic).
- Q2, register data, neural network against trees: the ``Q2`` AUC row (MLP against the best
  trees, role ``best_tree``).
- Q3, combining: the best fusion by inner-CV score against the best single-modality model
  by inner-CV score (their AUC row); the ways of combining not shown worse than the best
  fusion are the ``best_fusion`` AUC rows that are not *worse*.
- A fusion gain (Q3 *better*) is checked against what the single models could reach. With
  oracle rows: when the best model of a modality stands more than ``UNDERTRAINED_GAP``
  below its oracle (``auc_gap``) and that oracle alone reaches at least the fusion's AUC
  (so a well-trained single model could reach what fusion reached; when the under-trained
  model is the reference itself this is "the gain is no larger than its gap"), the gain is
  said to be one an under-trained single model may explain, and, when the joint oracle is
  within ``CEILING_TIE`` of that oracle (the other modality adds almost nothing at the
  Bayes limit), to be explained by it and not by complementary modalities. Without
  oracle rows: a best single model with more than ``AT_BUDGET_SHARE`` of its bag still
  improving at the end of its budget (early stopping did not fire), or, for a model without
  early stopping (``at_budget`` NaN), whose inner score still rose by more than
  ``STILL_RISING`` from 50 % to 100 % of its training budget, was still improving
  (``studies.csv``), so the gain may reflect under-training. The same two tests give the
  caveat of the Q1 answer (the best image model far below its oracle, or still improving).
- Uncertainty is called lower with fusion only when the mean-entropy row is *better* and
  the log-loss and Brier rows are ``noninferior`` (not worse by more than their margins).
- The profile (manifest): ``smoke`` says nothing about the models; ``quick``, or images
  under ``SMALL_IMAGES_PX`` or fewer than ``FEW_TRIALS`` trials, says little about what the
  models can reach. Its budget numbers are the manifest's cells.

Use::

    from benchmark.report.findings import write_findings
    markdown = write_findings(Path("results/quick-1"))   # also writes findings.md there

The modules: ``wording`` (numbers and comparison rows in words), ``tables`` (the rows the
answers speak of, the answer records), one per question (``q1_images``, ``q2_register``,
``q3_fusion``, with uncertainty) and ``assemble`` (the answers, the profile note, the caveats,
``findings.md``).
"""

from benchmark.report.findings.assemble import (FEW_TRIALS, SMALL_IMAGES_PX, build_findings, findings_markdown,
                                                findings_text, key_comparisons, write_findings)
from benchmark.report.findings.q3_fusion import CEILING_TIE
from benchmark.report.findings.tables import (AT_BUDGET_SHARE, CHANCE_AUC, QUESTIONS, SINGLE_MODALITIES, STILL_RISING,
                                              TREE_FAMILIES, UNDERTRAINED_GAP, Answer, Findings, best_by_inner)
from benchmark.report.findings.wording import ALPHA, LOWER_IS_BETTER, comparison_clause, fmt, fmt_ci, fmt_p, outcome

__all__ = ["ALPHA", "AT_BUDGET_SHARE", "CEILING_TIE", "CHANCE_AUC", "FEW_TRIALS", "LOWER_IS_BETTER", "QUESTIONS",
           "SINGLE_MODALITIES", "SMALL_IMAGES_PX", "STILL_RISING", "TREE_FAMILIES", "UNDERTRAINED_GAP", "Answer",
           "Findings", "best_by_inner", "build_findings", "comparison_clause", "findings_markdown", "findings_text",
           "fmt", "fmt_ci", "fmt_p", "key_comparisons", "outcome", "write_findings"]
