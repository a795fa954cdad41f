"""``python -m benchmark predict BUNDLE --data NEW.yaml [--out DIR] [--keep-ids] [--explain]``.

Loads the bundle (every file checked), checks the new dataset against its schema (one line
per problem; ``benchmark.export.schema``), and writes to ``--out`` (default
``predictions-<bundle folder name>/`` in the current folder)::

    predictions.csv     patient (P00001... in the dataset's row order), prob (calibrated P(AFF)),
                        entropy, mutual_info, set_90, set_95 (conformal sets, e.g. {AFF}, {NFF, AFF}),
                        above_threshold, missing (the modality the model reads but the patient lacks),
                        top_register (--explain: the largest register contributions)
    contributions.csv   --explain: patient, rank, column, contribution (log-odds), ten per patient
    patient_data/       --explain: saliency maps of the image networks (patient data, README.txt)
    validation.csv      when the dataset has labels: external figures beside the nested-CV ones
    validation.html     the same as an offline page (reliability diagram, decision curve, coverage)

``--keep-ids`` writes the dataset's own id column instead of the P-keys; the file is then
patient data (a warning says so).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path



N_BOOT = 1000


def predict(bundle: Path, data: Path, out: Path, *, keep_ids: bool = False, device: str = "cpu",
            accept_image_kind: bool = False, explain: bool = False) -> dict:
    """Predict the patients of ``data`` with the bundle's model; returns what was written.

    ``explain``: per-patient register contributions (``top_register``, contributions.csv) and
    saliency maps as patient data (``benchmark.explain.patient``)."""
    from benchmark.export.bundle import load_model
    from benchmark.export.schema import load_for_prediction

    t0 = time.monotonic()
    model = load_model(bundle, device=device)
    cohort = load_for_prediction(data, model.schema, accept_image_kind=accept_image_kind, keep_ids=keep_ids)
    table = model.table(cohort, keep_ids=keep_ids)
    out.mkdir(parents=True, exist_ok=True)
    if explain:
        from benchmark.explain.patient import explain_predictions

        written_explain = explain_predictions(model, cohort, table, out, seed=int(model.meta.get("seed", 0)))
    written = {"predictions": out / "predictions.csv"}
    tmp = out / ".predictions.csv.tmp"
    table.to_csv(tmp, index=False)
    os.replace(tmp, written["predictions"])
    if keep_ids:
        print(f"warning: {written['predictions']} holds the dataset's own patient ids (--keep-ids): it is patient "
              "data; store and share it as such", file=sys.stderr)
    if getattr(cohort, "labelled", True):
        from benchmark.report.validation import validation_figures
        from benchmark.report.validation_page import write_validation

        ext = validation_figures(cohort.y, table["prob"].to_numpy(), threshold=model.threshold,
                                 conformal=model.conformal, n_boot=N_BOOT, seed=int(model.meta.get("seed", 0)))
        cv_path = Path(bundle) / "cv_figures.json"
        cv = json.loads(cv_path.read_text()) if cv_path.exists() else None
        meta = {"candidate": model.meta.get("candidate"), "synthetic": model.meta.get("synthetic"),
                "bundle_created": model.meta.get("created"), "cohort": cohort.name,
                "threshold_text": model.meta.get("threshold_text", "").replace("/", " per "),
                "training_summary": f"trained on {model.meta.get('dataset_name')} (run {model.meta.get('run')}, "
                                    f"profile {model.meta.get('profile')}); each member on about "
                                    f"{model.meta.get('member_patients_export')} patients, in the nested CV on about "
                                    f"{model.meta.get('member_patients_run')}"}
        written["validation_csv"], written["validation_html"] = write_validation(out, ext, cv, meta)
        written["auc"] = ext.get("auc")
    if explain:
        written.update(explained=written_explain)
    written["n"] = len(table)
    written["wall_s"] = round(time.monotonic() - t0, 1)
    return written


# ---- CLI ------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle folder written by `benchmark export`")
    p.add_argument("--data", required=True, metavar="NEW.yaml", help="dataset file of the patients to predict "
                                                                       "(labels optional: with labels, external validation)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: predictions-<bundle name>)")
    p.add_argument("--keep-ids", action="store_true", help="write the dataset's id column instead of P-keys "
                                                           "(the output is then patient data)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--explain", action="store_true",
                   help="per patient: the largest register contributions (top_register, contributions.csv) and "
                        "saliency maps of the image networks (patient data, in OUT/patient_data/)")
    p.add_argument("--accept-image-kind", action="store_true",
                   help="predict even when the images are of another kind than in training (e.g. PNG vs DICOM)")


def command(args: argparse.Namespace) -> int:
    from benchmark.data.dataset import DatasetWarning
    from benchmark.export.schema import SchemaWarning

    bundle = Path(args.bundle)
    out = Path(args.out) if args.out else Path(f"predictions-{bundle.name}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = predict(bundle, Path(args.data), out, keep_ids=args.keep_ids, device=args.device,
                      accept_image_kind=args.accept_image_kind, explain=args.explain)
    for w in caught:
        if issubclass(w.category, (SchemaWarning, DatasetWarning)):
            print(f"warning: {w.message}", file=sys.stderr)
    print(f"{res['n']} patients predicted in {res['wall_s']} s: {res['predictions']}")
    if "explained" in res:
        ex = res["explained"]
        if "contributions" in ex:
            print(f"register contributions ({ex['method']}): {ex['contributions']}")
        if ex.get("saliency"):
            print(f"saliency maps of {', '.join(ex['saliency'])} (patient data): {out / 'patient_data'}")
    if "validation_html" in res:
        auc = res.get("auc")
        shown = f"{auc:.3f}" if isinstance(auc, float) and auc == auc else "n/a"
        print(f"external validation (AUC {shown}): {res['validation_html']}")
    return 0
