"""Orchestration: a run, from its settings to its folder of results.

    settings (folder.RunConfig) -> units.build_plan: the work units (candidate x repeat x outer fold)
        -> plan/: their cost, without training (also ``python -m benchmark plan``)
        -> runner.run: each unit in plan order (fold_runner.FoldRunner.run_unit, with bag.py),
           or on Ray workers (scale.py), the progress line (progress.py)
        -> gather.finish_run: predictions, leaderboard, comparisons, findings.md, leaderboard.html

Imports point down that flow: ``runner`` imports the others, ``plan`` never imports ``runner``.
``folder.py`` owns the run folder and the manifest (docs/design.md, section 4).
"""
