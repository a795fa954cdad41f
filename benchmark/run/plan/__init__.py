"""Cost you can see before you pay it: the run plan's work, counted and priced, without training.

    python -m benchmark plan --suite all --profile quick                      # measures this CPU (cached)
    python -m benchmark plan --suite image --profile standard --device-profile h200
    python -m benchmark plan --suite all --profile standard --device-profile gpu   # measures this GPU (cached)

``counts.build_cost_plan`` resolves the candidates, the cohort size after ``max_patients`` and the
profile's folds exactly as ``run`` does, then counts per candidate: work units, trials, fits
(trials x inner folds per unit; the bag reuses the best trial's models, so it adds no fit,
only prediction passes; ``refit_full`` adds one fit per unit) and the images seen in
training. A priced plan (``pricing.price``) turns that into seconds::

    plan = plan_for_run(cands, profile, cohort, units)          # estimate.plan_for_run: build_cost_plan for a run
    costs = cpu_costs(plan) if device_profile == "cpu" else h200_costs(plan)   # calibrate
    priced = price(plan, costs)
    priced.total_s, priced.unit_s[("resnet18", 0, 1)]        # the run's and one unit's estimate

The modules, in the order a plan goes through them:

- ``counts``: the plan's work (``CostPlan``, ``CandidatePlan``, ``build_cost_plan``);
- ``costs``: per-image and per-fit costs (``Costs``) and the H200 table;
- ``cache``, ``measure``, ``calibrate``: this machine's costs, measured once and cached
  (``calibrate.cpu_costs``, ``calibrate.h200_costs``, ``calibrate.costs_for``);
- ``pricing``: seconds per trial, unit and candidate (``price``, ``Priced``);
- ``schedule``: the makespan on several workers and GPUs (``makespan``, ``Schedule``);
- ``render``: the printed plan; ``estimate``: the estimate ``run`` prints first;
  ``command``: ``python -m benchmark plan``.
"""
