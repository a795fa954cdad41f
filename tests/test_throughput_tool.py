"""The throughput tool's concurrent mode: k fits at once in k processes, each reporting its rate."""

from __future__ import annotations

from benchmark.tools.throughput import concurrent_images_per_s, main


def test_two_concurrent_fits_each_report_a_rate():
    rates = concurrent_images_per_s("test_resnet", 16, 8, 2, "cpu", 2, 0.0, 2)
    assert len(rates) == 2 and all(r > 0 for r in rates)


def test_the_concurrent_table_prints_the_gain_over_one_fit(capsys):
    assert main(["--device", "cpu", "--models", "test_resnet", "--sizes", "16", "--batch", "8", "--steps", "2",
                 "--concurrent", "1,2", "--aug", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [ln.split() for ln in lines if ln.startswith("test_resnet")]
    assert [r[2] for r in rows] == ["1", "2"] and rows[0][-1] == "1.00" and float(rows[1][-1]) > 0


def test_compile_rows_compare_the_compiled_bare_loop_with_the_eager_one(capsys, monkeypatch):
    import torch

    modes = []
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: modes.append(mode) or model)   # no real compile
    assert main(["--device", "cpu", "--models", "test_resnet", "--sizes", "16", "--batch", "8", "--steps", "2",
                 "--aug", "0", "--compile", "default,reduce-overhead"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if "bare compiled" in ln]
    assert modes == ["default", "reduce-overhead"] and len(rows) == 2
    assert "(default)" in rows[0] and "x eager" in rows[0] and "first step (compiling)" in rows[0]
