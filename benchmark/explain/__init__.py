"""Why the models predict what they do: register risk factors, where a CNN looks, missing images.

Everything here runs a fitted model again on data it already predicted, changed in one
known way; nothing is trained and no label reaches a model:

- ``permutation``: the AUC a unit's predictor loses on its outer-test part when one register
  column is shuffled among the test patients (with a bootstrap interval), and the direction
  of each column's effect; ``scorers`` run a family on many shuffled register tables at once
  (``feature_cache`` keeps a fusion network's image features, which a shuffled register
  column does not change);
- ``shap``: TreeSHAP contributions through XGBoost's ``pred_contribs`` and LightGBM's
  ``pred_contrib``;
- ``gradcam``: Grad-CAM maps of an image network, and their localisation against the
  synthetic cohort's sign regions (``benchmark.evaluate.localisation``);
- ``missing``: a fusion candidate's outer-test predictions with the images withheld;
- ``patient``: per-patient register contributions and saliency maps for ``predict --explain``;
- ``patient_data``: the folder marked as patient data that saliency maps go to.

The orchestration (which unit computes what, the part files) is ``benchmark.run.explain_unit``;
the pooled tables and scores are ``benchmark.evaluate.importance`` / ``recovery`` /
``localisation`` / ``missing_modality``; the report's section is ``report.findings.risk``.
"""
