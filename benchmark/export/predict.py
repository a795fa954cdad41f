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
    validation.html     the answers first (discrimination, calibration, threshold, conformal sets, shift,
                        subgroups), then the figures (reliability diagram, decision curve, coverage)
    shift.csv           the new cohort against the bundle's development aggregates (standardised differences)
    subgroups.csv       when the dataset file names subgroups: AUC and calibration per level
    update.csv          with --update: the source model and the updated one (out-of-fold) at this site

``--update intercept|logistic`` (labelled data) recalibrates the model for the new site by
cross-validation and writes it as a new bundle (``export.update``; ``--update-out``, ``--sign``).

``--keep-ids`` writes the dataset's own id column instead of the P-keys; the file is then
patient data (a warning says so). ``--trust KEYS`` refuses a bundle that a key among KEYS
did not sign (``benchmark.export.signing``); without it, a note says the origin is unverified.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

from benchmark.errors import UserError


N_BOOT = 1000
UPDATES = ("intercept", "logistic")


def predict(bundle: Path, data: Path, out: Path, *, keep_ids: bool = False, device: str = "cpu",
            accept_image_kind: bool = False, trust: list[str] | None = None, update: str | None = None,
            update_out: Path | None = None, sign: Path | None = None, explain: bool = False) -> dict:
    """Predict the patients of ``data`` with the bundle's model; returns what was written.

    ``trust``: public keys (files or folders); the bundle must be signed by one (``signing``).
    ``update`` (``intercept`` or ``logistic``, labelled data only): recalibrate the model for this site and
    write it as a new bundle (``update_out``, default ``<bundle>-<kind>`` beside it; signed with ``sign``).
    ``explain``: per-patient register contributions (``top_register``, contributions.csv) and
    saliency maps as patient data (``benchmark.explain.patient``).
    """
    from benchmark.export.bundle import load_model
    from benchmark.export.schema import load_for_prediction
    from benchmark.outputs import private_dir

    t0 = time.monotonic()
    if update is not None and update not in UPDATES:
        raise UserError(f"--update {update!r}: choose one of {', '.join(UPDATES)}")
    model = load_model(bundle, device=device, trust=trust)
    cohort = load_for_prediction(data, model.schema, accept_image_kind=accept_image_kind, keep_ids=keep_ids)
    if update and not getattr(cohort, "labelled", True):
        raise UserError(f"{data}: --update needs labels (a 'label' key in the dataset file): the update is fitted "
                        "on the new site's labelled patients")
    if update and sign is not None:
        from benchmark.export.signing import load_private

        load_private(Path(sign))   # a bad key fails before anything is written
    table = model.table(cohort, keep_ids=keep_ids)
    private_dir(out)   # predictions are patient data: owner-only (benchmark.outputs)
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
        from benchmark.export.external import external_validation

        done = external_validation(model, cohort, table["prob"].to_numpy(), out, n_boot=N_BOOT, update=update,
                                   update_out=update_out, sign=sign)
        written.update(done)
    written["signed_by"] = model.meta.get("signed_by")
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
    p.add_argument("--update", default=None, choices=list(UPDATES),
                   help="labelled data only: recalibrate the model for this site (intercept: in the large; logistic: "
                        "intercept and slope), checked out-of-fold, and write it as a new bundle")
    p.add_argument("--update-out", default=None, metavar="DIR",
                   help="folder of the updated bundle (default: <bundle>-<kind> beside the bundle; never the bundle)")
    p.add_argument("--sign", default=None, metavar="KEY", help="sign the updated bundle with this private key "
                                                               "(without it the updated bundle is unsigned)")
    p.add_argument("--trust", action="append", default=None, metavar="KEYS",
                   help="public key file, or folder of them (repeatable): refuse a bundle not signed by one of them "
                        "(python -m benchmark keys)")


def command(args: argparse.Namespace) -> int:
    from benchmark.data.dataset import DatasetWarning
    from benchmark.export.schema import SchemaWarning

    bundle = Path(args.bundle)
    out = Path(args.out) if args.out else Path(f"predictions-{bundle.name}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = predict(bundle, Path(args.data), out, keep_ids=args.keep_ids, device=args.device,
                      accept_image_kind=args.accept_image_kind, trust=args.trust, update=args.update,
                      update_out=Path(args.update_out) if args.update_out else None,
                      sign=Path(args.sign) if args.sign else None, explain=args.explain)
    for w in caught:
        if issubclass(w.category, (SchemaWarning, DatasetWarning)):
            print(f"warning: {w.message}", file=sys.stderr)
    if res["signed_by"]:
        print(f"bundle signed by trusted key {res['signed_by']}")
    else:
        print("note: the bundle's origin is unverified: its SHA-256 digests show that no file changed since its "
              "manifest was written, not who wrote it; pass --trust KEYS to require the exporting site's signature",
              file=sys.stderr)
    print(f"{res['n']} patients predicted in {res['wall_s']} s: {res['predictions']}")
    if "explained" in res:
        ex = res["explained"]
        if "contributions" in ex:
            print(f"register contributions ({ex['method']}): {ex['contributions']}")
        if ex.get("saliency"):
            print(f"saliency maps of {', '.join(ex['saliency'])} (patient data): {out / 'patient_data'}")
    if "validation_html" in res:
        auc, oe = res.get("auc"), res.get("oe_ratio")
        shown = f"{auc:.3f}" if isinstance(auc, float) and auc == auc else "n/a"
        shown_oe = f"{oe:.2f}" if isinstance(oe, float) and oe == oe else "n/a"
        print(f"external validation (AUC {shown}, O/E {shown_oe}): {res['validation_html']}")
    if "updated_bundle" in res:
        after = res["update_after"].get("oe_ratio")
        print(f"updated bundle ({args.update}; out-of-fold O/E here {after:.2f}): {res['updated_bundle']}"
              + ("" if args.sign else " (unsigned: python -m benchmark keys sign BUNDLE --key KEY signs it)"))
    return 0
