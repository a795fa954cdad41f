"""Answers to the three questions, written from a run's stored tables.

Reads ``leaderboard.csv``, ``comparisons.csv``, ``studies.csv`` and ``manifest.json``
(all but the leaderboard optional) through ``run_files`` and never recomputes a metric:
every number in the text is a cell of those files (or of the manifest's profile), formatted with ``wording.fmt``
(3 decimals; p-values below 0.001 are written ``< 0.001``), besides the fixed rule
constants (``tables``, ``q1_images``, ``q3_fusion``, ``assemble``: 0.5 for chance, 90 % specificity and its 5-point
miss, the half budget of the learning curve).

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
  out-of-fold data, with the specificity that threshold reached on the test patients (a miss
  of more than 5 points is flagged: the threshold did not transfer), next to the test-set
  threshold (optimistic) in the detail.
- Q2, register data, neural network against trees: the ``Q2`` AUC row (MLP against the best
  trees, role ``best_tree``), led by which: *The neural network*, *Trees*, *Either*
  (equivalent), *The neural network does as well, within the margin* (non-inferior), or
  *Not shown which*.
- Q3, combining: the best fusion by inner-CV score against the best image **and** the best
  register model (each its modality's best by inner score; their inner scores are not
  compared with each other, which the detail says when trial budgets or refits differ).
  *Yes* only when it is better than both; *Worse* when it is worse than one; *No* when it is
  equivalent to one (it adds no more than the margin); *Not shown* otherwise, naming which it
  beats. The ways of combining not shown worse than the best fusion are the ``best_fusion``
  AUC rows that are not *worse*.
- A fusion gain (Q3 *Yes*) is checked against what the single models could reach. With
  oracle rows: when the best model of a modality stands more than ``UNDERTRAINED_GAP``
  below its oracle (``auc_gap``) and that oracle alone reaches at least the fusion's AUC
  (so a well-trained single model could reach what fusion reached), the gain is said to be
  one an under-trained single model may explain, and, when the joint oracle is within
  ``CEILING_TIE`` of that oracle (the other modality adds almost nothing at the Bayes
  limit), to be explained by it and not by complementary modalities. Without oracle rows: a
  best single model still improving (``tables._Run.still_improving``: more than
  ``AT_BUDGET_SHARE`` of its bag still improving when early stopping did not fire, or, for a
  network without early stopping that could fire, its full budget more than
  ``STILL_RISING`` above a fit with half of it on its own complete schedule; never snapshots
  part-way through a schedule) makes the gain one under-training may explain. Any other Q3
  answer says when a reference is at chance (*Not shown*: the run cannot tell what combining
  adds), far below its oracle or still improving (better-trained single models may change
  it). The same tests give the caveat of the Q1 answer, where a gap to the oracle is said of
  the generator's evidence (the oracle is the generator's exact posterior), not of the data
  as a model sees them.
- Uncertainty (``uncertainty``) is called lower with fusion only when the mean-entropy row
  is *better* and lower by more than its margin (the whole interval beyond it), and the
  log-loss and Brier rows are ``noninferior`` and not worse on the sample; otherwise the
  verdict names what held and what did not.
- The profile (manifest): ``smoke`` says nothing about the models; ``quick``, or images
  under ``SMALL_IMAGES_PX`` or fewer than ``FEW_TRIALS`` trials, says little about what the
  models can reach. Its budget numbers are the manifest's cells.

Use::

    from benchmark.report.findings import write_findings
    markdown = write_findings(Path("results/quick-1"))   # also writes findings.md there

The modules: ``wording`` (numbers and comparison rows in words), ``tables`` (the rows the
answers speak of, the answer records), one per question (``q1_images``, ``q2_register``,
``q3_fusion``, and ``uncertainty`` for Q3's uncertainty part) and ``assemble`` (the answers, the profile note, the caveats,
``findings.md``).
"""

from benchmark.report.findings.assemble import (FEW_TRIALS, SMALL_IMAGES_PX, build_findings, combining_answer,
                                                findings_markdown, findings_text, key_comparisons, write_findings)
from benchmark.report.findings.q3_fusion import CEILING_TIE
from benchmark.report.findings.tables import (AT_BUDGET_SHARE, CHANCE_AUC, QUESTIONS, SINGLE_MODALITIES, STILL_RISING,
                                              TREE_FAMILIES, UNDERTRAINED_GAP, Answer, Findings, best_by_inner)
from benchmark.report.findings.wording import ALPHA, LOWER_IS_BETTER, comparison_clause, fmt, fmt_ci, fmt_p, outcome

__all__ = ["ALPHA", "AT_BUDGET_SHARE", "CEILING_TIE", "CHANCE_AUC", "FEW_TRIALS", "LOWER_IS_BETTER", "QUESTIONS",
           "SINGLE_MODALITIES", "SMALL_IMAGES_PX", "STILL_RISING", "TREE_FAMILIES", "UNDERTRAINED_GAP", "Answer",
           "Findings", "best_by_inner", "build_findings", "combining_answer", "comparison_clause", "findings_markdown", "findings_text",
           "fmt", "fmt_ci", "fmt_p", "key_comparisons", "outcome", "write_findings"]
