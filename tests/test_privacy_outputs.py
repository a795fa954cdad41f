"""No patient identifier in anything a run writes: planted names and ids are scanned for."""

from __future__ import annotations

from pathlib import Path

from benchmark.run.runner import RunConfig, run
from runner_helpers import LATE, TINY_CNN, write_spaces

NAME = "Lindqvist"
ID_PREFIX = "19380612-"

def test_planted_identifiers_appear_in_no_output_file(tiny_dataset, tmp_path):
    ds = tiny_dataset(n_pos=8, n_neg=12, planted_name=NAME, id_prefix=ID_PREFIX, oracle=True)
    spaces = write_spaces(tmp_path / "spaces", n_trials=2, outer_folds=2, extra={"tiny_cnn": TINY_CNN, "late": LATE})
    out = run(RunConfig(candidates=["logreg", "tiny_cnn", "late"], data=str(ds.yaml), profile="tiny",
                        device="cpu", spaces=[str(spaces)], results_dir=str(tmp_path / "results"), run="private"))
    files = [p for p in Path(out).rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"leaderboard.csv", "leaderboard.html", "predictions.parquet", "trials.csv", "folds.csv",
            "manifest.json", "optuna.db", "findings.md"} <= names
    planted = [NAME, ID_PREFIX, *ds.ids]
    assert_clean(files, planted)
    # the exported bundle and what predict writes (P-keys, aggregates) hold none either
    from benchmark.export.export import export
    from benchmark.export.predict import predict

    bundle = export(Path(out), "late", tmp_path / "bundle", device="cpu")
    predict(bundle, ds.yaml, tmp_path / "pred")
    files = [p for d in (bundle, tmp_path / "pred") for p in Path(d).rglob("*") if p.is_file()]
    assert {"model_card.md", "bundle.json", "model.json", "predictions.csv", "validation.html"} <= {p.name for p in files}
    assert_clean(files, planted)


def assert_clean(files: list[Path], planted: list[str]) -> None:
    """No planted identifier in any file's name or bytes (UTF-8 or UTF-16)."""
    for f in files:
        data = f.read_bytes()
        for p in planted:
            assert p not in f.name, (f, p)
            assert p.encode() not in data and p.encode("utf-16-le") not in data, (f.name, p)
