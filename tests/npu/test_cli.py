"""pasa-verify end to end on small cases (the reference default case itself is `make demo`)."""
from __future__ import annotations

import json
import math

import pytest

from pasa_npu.cli import build_parser, main

SMALL = ["--heads", "4", "--kv-heads", "2", "--seq-q", "130", "--seq-kv", "300", "--head-dim", "32"]


def test_help_lists_every_knob(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--dist", "--mean", "--amplitude", "--heads", "--kv-heads", "--seq-q", "--seq-kv", "--head-dim",
                "--beta", "--block-q", "--block-kv", "--precision", "--device", "--methods", "--grid", "--out",
                "--causal", "--seed", "--format"):
        assert opt in text, opt
    assert "fa_qk" in text and "pasa:<preset>" in text


def test_defaults_are_the_reference_case():
    a = build_parser().parse_args([])
    assert (a.dist, a.mean, a.batch, a.heads, a.kv_heads, a.seq_q, a.seq_kv, a.head_dim, a.seed) == (
        "uniform", 30.0, 1, 28, 4, 1407, 1407, 128, 2024724)
    assert a.amplitude is None  # 0.5 for uniform, 10 for hybrid, as in the script


def test_single_case_table(capsys):
    # d = 128 at mean 30: |q.k| ~ 128 * 30^2 = 115200 > 65504, so the vendor-style fa_qk overflows
    assert main(SMALL + ["--head-dim", "128", "--methods", "pasa,pasa:script,fa_qk,fa_q,sdpa"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith(("pasa", "fa_", "sdpa"))]
    assert len(lines) == 5
    fa_qk = next(ln for ln in lines if ln.startswith("fa_qk"))
    assert "nan" in fa_qk
    pasa = next(ln for ln in lines if ln.startswith("pasa "))
    assert " 0 " in pasa  # no non-finite values


def test_json_output_and_bad_method(capsys):
    assert main(SMALL + ["--methods", "pasa", "--format", "json", "--mean", "0", "--amplitude", "1"]) == 0
    rec = json.loads(capsys.readouterr().out)[0]
    assert rec["method"] == "pasa" and rec["nonfinite"] == 0 and math.isfinite(rec["rmse"])
    with pytest.raises(SystemExit):
        main(SMALL + ["--methods", "pasa,fa17"])


def test_grid_writes_csv_and_json(tmp_path, capsys):
    args = SMALL + ["--grid", "--means", "0,30", "--amplitudes", "0.5", "--methods", "pasa,fa_qk",
                    "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    data = json.loads((tmp_path / "grid.json").read_text())
    assert len(data["records"]) == 2 * 2 * 1 * 2  # dists x means x amplitudes x methods
    assert "torch" in data["environment"]
    assert (tmp_path / "grid.csv").read_text().startswith("dist,mean,amplitude,method")


def test_npu_methods_refuse_without_an_npu(capsys):
    assert main(SMALL + ["--methods", "npu_fia_ip1", "--device", "cpu"]) == 2
    assert "Ascend NPU" in capsys.readouterr().err
