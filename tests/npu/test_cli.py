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
    for opt in (
        "--dist",
        "--mean",
        "--amplitude",
        "--heads",
        "--kv-heads",
        "--seq-q",
        "--seq-kv",
        "--head-dim",
        "--beta",
        "--block-q",
        "--block-kv",
        "--precision",
        "--device",
        "--methods",
        "--grid",
        "--out",
        "--causal",
        "--seed",
        "--format",
    ):
        assert opt in text, opt
    assert "fa_qk" in text and "pasa:<preset>" in text


def test_defaults_are_the_reference_case():
    a = build_parser().parse_args([])
    assert (a.dist, a.mean, a.batch, a.heads, a.kv_heads, a.seq_q, a.seq_kv, a.head_dim, a.seed) == (
        "uniform",
        30.0,
        1,
        28,
        4,
        1407,
        1407,
        128,
        2024724,
    )
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
    args = SMALL + [
        "--grid",
        "--means",
        "0,30",
        "--amplitudes",
        "0.5",
        "--methods",
        "pasa,fa_qk",
        "--out",
        str(tmp_path),
        "--no-progress",
    ]
    assert main(args) == 0
    data = json.loads((tmp_path / "grid.json").read_text())
    assert len(data["records"]) == 2 * 2 * 1 * 2  # dists x means x amplitudes x methods
    assert "torch" in data["environment"]
    assert (tmp_path / "grid.csv").read_text().startswith("dist,mean,amplitude,method")


def test_npu_methods_refuse_without_an_npu(capsys):
    assert main(SMALL + ["--methods", "npu_fia_ip1", "--device", "cpu"]) == 2
    assert "Ascend NPU" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# ergonomics: help, exit codes and messages, files only where --out says, legend and conclusion


def _help_text(capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_help_has_no_empty_or_doubled_defaults(capsys):
    import re

    text = _help_text(capsys)
    assert "(default: None)" not in text and "(default: False)" not in text
    # one option's help = from its flag to the next flag; none states its default twice
    blocks = re.split(r"\n  (?=-)", text)
    for b in blocks:
        assert b.count("default") <= 1, b
    for opt, words in (("--batch", "batch size"), ("--head-dim", "head dimension"), ("--seed", "seed")):
        block = next(b for b in blocks if b.startswith(opt))
        assert words in block, block
    assert "--predict-rows" in text and "--repeat" in text and "Exit status" in text
    assert "--save" not in text  # kept for old command lines only


def test_nothing_is_written_without_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(SMALL + ["--methods", "pasa", "--repeat", "1"]) == 0
    assert (
        main(
            SMALL
            + [
                "--grid",
                "--means",
                "0",
                "--amplitudes",
                "0.5",
                "--dists",
                "uniform",
                "--methods",
                "pasa",
                "--no-progress",
            ]
        )
        == 0
    )
    assert list(tmp_path.iterdir()) == []
    err = capsys.readouterr().err
    assert "wrote" not in err and "not saved (--out DIR writes grid.csv and grid.json)" in err


def test_out_writes_the_single_case(tmp_path, capsys):
    assert main(SMALL + ["--methods", "pasa", "--repeat", "1", "--out", str(tmp_path / "o")]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["case.csv", "case.json"]
    assert "wrote" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--beta", "1.5"], "beta"),
        (["--beta", "0"], "beta"),
        (["--heads", "3", "--kv-heads", "2"], "heads"),
        (["--scale", "-1"], "scale"),
    ],
)
def test_bad_values_exit_2_with_the_library_message(argv, needle, capsys):
    assert main(SMALL + ["--methods", "pasa", "--repeat", "1"] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pasa-verify: error: ") and needle in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    "argv",
    [
        ["--heads", "0"],
        ["--seq-kv", "-3"],
        ["--repeat", "0"],
        ["--predict-rows", "-1"],
        ["--save"],
        ["--methods", ","],
        ["--means", "1,x"],
    ],
)
def test_bad_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_cuda_without_cuda_exits_2(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(SMALL + ["--methods", "pasa", "--device", "cuda"]) == 2
    assert "cuda" in capsys.readouterr().err


def test_legend_and_conclusion(capsys):
    # d = 128 at mean 30: fa_qk's scores overflow in every row, so every output element is NaN
    assert main(SMALL + ["--head-dim", "128", "--methods", "pasa,fa_qk,fa_q", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    numel = 1 * 4 * 130 * 128
    fa_qk = next(ln for ln in out.splitlines() if ln.startswith("fa_qk"))
    assert f"{numel} (all, first at scores)" in fa_qk
    assert "legend:" in out and f"of {numel} per method" in out and "stage 'scores'" in out
    assert "best of 2 runs after a warm-up" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("conclusion: fa_qk gives inf/NaN in all ") and "pasa is finite" in last
    assert "that of fa_q" in last


def test_conclusion_ratios_are_the_table_ratios():
    from pasa_npu.cli import conclusion

    recs = [
        dict(method="pasa", rel_rmse=2e-4, nonfinite=0),
        dict(method="fa_q", rel_rmse=8e-4, nonfinite=0),
        dict(method="fa_qk", rel_rmse=math.nan, nonfinite=10, first_nonfinite_stage="scores"),
        dict(method="sdpa", rel_rmse=1e-4, nonfinite=0),
    ]
    text = conclusion(recs, numel=20)
    assert text == (
        "conclusion: fa_qk gives inf/NaN in 10 output elements, first at the scores stage; pasa is finite "
        "with rel RMSE 2.00e-04 (0.25x that of fa_q); lowest rel RMSE: sdpa 1.00e-04."
    )


def test_stage_legend_covers_every_census_stage():
    from pasa_npu.cli import STAGE_MEANING
    from pasa_npu.metrics import STAGES

    assert tuple(STAGE_MEANING) == STAGES


def test_predict_samples_rows_and_says_so(tmp_path, capsys):
    rc = main(
        [
            "--predict",
            "--heads",
            "2",
            "--kv-heads",
            "1",
            "--seq-q",
            "100",
            "--seq-kv",
            "300",
            "--head-dim",
            "32",
            "--methods",
            "pasa,fa_q",
            "--predict-rows",
            "8",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    cap = capsys.readouterr()
    assert "measured and predicted on 8 of 100 query rows per head" in cap.out
    header = next(ln for ln in cap.out.splitlines() if ln.startswith("dist"))
    names = header.split()
    assert "ratio" not in names and "pred/meas" in names and "bound/max" in names
    assert "predict:" in cap.err  # the tqdm bar on stderr
    meta = json.loads((tmp_path / "predict.json").read_text())["meta"]
    assert meta["query_rows"] == [0, 14, 28, 42, 56, 70, 84, 99]


def test_predict_uses_every_row_when_causal(capsys):
    rc = main(
        [
            "--predict",
            "--heads",
            "2",
            "--kv-heads",
            "1",
            "--seq-q",
            "20",
            "--seq-kv",
            "200",
            "--head-dim",
            "32",
            "--methods",
            "pasa",
            "--causal",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert "on all 20 query rows per head (causal mask" in capsys.readouterr().out


def test_sampled_rows_equal_the_full_run_bit_for_bit():
    """The claim behind --predict-rows: without a mask, a sampled row's output is that row of the full run."""
    import torch

    from pasa_npu import data, flash_attention, pasa_attention
    from pasa_npu.predict_report import row_indices, sample_rows

    q, k, v = data.make_qkv(
        "hybrid",
        batch=1,
        heads=4,
        kv_heads=2,
        seq_q=300,
        seq_kv=260,
        head_dim=32,
        mean=10.0,
        amplitude=5.0,
        seed=3,
    )
    idx = row_indices(300, 16)
    assert idx[0] == 0 and idx[-1] == 299 and len(set(idx)) == 16
    for fn in (pasa_attention, flash_attention):
        full = fn(q, k, v)
        part = fn(sample_rows(q, 16), k, v)
        assert torch.equal(part, full[:, :, idx]), fn.__name__
    assert sample_rows(q, 0) is q and sample_rows(q, 300) is q
