"""Hostile input from flags and file-system trouble at the outputs: one line, exit 2, nothing written.

Each case is one a hostile user tried (issue 15): non-finite and huge numbers, inputs that would
take minutes or gigabytes, output paths that cannot be written. Every one must end with one line
on stderr that names the flag or file and the fix, exit code 2, no traceback, and no output file.
"""
from __future__ import annotations

import os
import time

import pytest

from test_cli_foundation import run

TRACE = os.path.join(os.path.dirname(__file__), "..", "traces", "cpu-gloo_w2_zigzag_causal_fwd_T1024.json")


def _refused(argv, needle, cwd=None):
    code, out, err = run(*argv)
    assert code == 2, (argv, code, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert needle in err, err
    return err


# ---- numbers from flags -----------------------------------------------------------------------------

NUMBERS = [
    (["simulate", "--link-scale", "nvlink:inf"], "--link-scale bandwidth factor must be a finite number in [1e-06, 1e+06]"),
    (["simulate", "--link-scale", "nvlink:1:nan"], "--link-scale latency factor must be a finite number"),
    (["simulate", "--straggler", "3:inf"], "--straggler speed factor must be a finite number"),
    (["simulate", "--degrade-link", "g0,sw0:g*,1e999"], "--degrade-link factor must be a finite number"),
    (["plan", "--peak-flops", "1e999"], "--peak-flops must be a finite number in [1, 1e+24] FLOP/s"),
    (["plan", "--peak-flops", "nan"], "--peak-flops"),
    (["sweep", "--bw-scale", "inf"], "--bw-scale value must be a finite number"),
    (["sweep", "--bw-scale", "1e-9"], "--bw-scale value must be a finite number in [1e-06, 1e+06]"),
    (["plan", "--seq-len", "1180591620717411303424"], "at most 2,147,483,648 tokens"),
    (["simulate", "--seq-len", "1180591620717411303424"], "at most 2,147,483,648 tokens"),
    (["memory", "--seq-len", "9" * 5000], "too large"),
    (["plan", "--mask", "sliding:99999999999999999999"], "sliding window"),
    (["plan", "--batch", "99999999999999999999999"], "batch must be at most 65,536"),
    (["memory", "--batch", "65536", "--seq-len", "2G"], "beyond the 9.01e+15 bytes ringsim models exactly"),
    (["plan", "--heads", "99999999999999999999999"], "heads must be at most 65,536"),
    (["memory", "--model", "", "--layers", "99999999999999999999", "--heads", "4", "--head-dim", "4"],
     "layers must be at most 65,536"),
    (["memory", "--world-size", "99999999999999999999999"], "--world-size must be at most"),
    (["plan", "--tile", "128x128x128"], "is not QxK"),
    (["plan", "--tile", "99999999999999999999x1"], "both sides must be in [1, 65536]"),
    (["memory", "--model", ",,"], "names no model"),
    (["memory", "-o", ""], "empty file name"),
    (["simulate", "--trace", ""], "empty file name"),
    (["sweep", "--jobs", "0"], "--jobs must be in [1, 1,024]"),
    (["sweep", "--batch", "0"], "--batch must be in [1, 65,536]"),
    (["sweep", "--dtype", "fp7"], "unknown dtype 'fp7'"),
    (["sweep", "--mask", "diagonal"], "unknown mask 'diagonal'"),
    (["sweep", "--seq-len", "1000", "--schedules", "zigzag"], "no point of this sweep can run"),
]


@pytest.mark.parametrize("argv,needle", NUMBERS, ids=[" ".join(a)[:60] for a, _ in NUMBERS])
def test_bad_numbers_are_refused_with_their_range(argv, needle):
    _refused(argv, needle)


def test_run_refuses_infinite_timeout_before_starting_ranks(capsys):
    pytest.importorskip("torch")
    from ringsim.cli import main

    for bad, needle in (("inf", "--timeout-s must be a finite number in (0, 604800] s"),
                        ("nan", "--timeout-s must be positive")):
        with pytest.raises(SystemExit) as e:
            main(["run", "--world-size", "2", "--seq-len", "64", "--timeout-s", bad])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and needle in err and len(err.splitlines()) == 1, err


# ---- limits before work ------------------------------------------------------------------------------

def test_plan_steps_past_the_row_limit_is_refused_at_once(monkeypatch):
    t0 = time.monotonic()
    err = _refused(["plan", "--world-size", "4096", "--seq-len", "1M", "--steps"], "RINGSIM_MAX_TABLE_ROWS=N")
    assert time.monotonic() - t0 < 5
    assert "16,777,216 rows" in err and "--no-steps" in err and "at most 256" in err
    # raising the limit lets a larger table through
    monkeypatch.setenv("RINGSIM_MAX_TABLE_ROWS", str(300 * 300))
    code, out, err = run("plan", "--world-size", "288", "--seq-len", "288K", "--steps", "--format", "csv")
    assert code == 0 and len(out.strip().splitlines()) == 1 + 288 * 288


def test_ranks_per_ring_limit(monkeypatch):
    _refused(["plan", "--world-size", "8192", "--seq-len", "1M", "--no-steps"], "RINGSIM_MAX_RANKS=N")
    monkeypatch.setenv("RINGSIM_MAX_RANKS", "lots")
    _refused(["plan", "--world-size", "8", "--seq-len", "1M"], "RINGSIM_MAX_RANKS='lots' is not a positive integer")


def test_large_topologies_are_refused_before_they_are_built(tmp_path):
    dev = "device: {name: X, peak_flops: 1e15, efficiency: 0.5, memory: 80 GB}\n"
    fc = tmp_path / "fc4096.yaml"
    fc.write_text("dimensions:\n  - {topology: fully-connected, size: 4096, bandwidth: 1e9, latency: 1e-6}\n" + dev)
    huge = tmp_path / "maximal.yaml"
    huge.write_text("dimensions:\n  - {topology: switch, size: 1024, bandwidth: 1e9, latency: 1e-6}\n"
                    "  - {topology: fully-connected, size: 1024, bandwidth: 1e9, latency: 1e-6}\n" + dev)
    t0 = time.monotonic()
    err = _refused(["topology", "show", str(fc)], "RINGSIM_MAX_LINKS=N")
    assert str(fc) in err and "8,386,560 links" in err
    err = _refused(["simulate", "--topology", str(huge)], "RINGSIM_MAX_GPUS=N")
    assert str(huge) in err and "1,048,576 GPUs" in err
    assert time.monotonic() - t0 < 5
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    _refused(["topology", "show", str(big)], "RINGSIM_MAX_YAML_BYTES=N")
    deep = tmp_path / "deep.yaml"
    deep.write_text("a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200)) + "  " * 200 + "v: 1\n")
    _refused(["topology", "show", str(deep)], "RINGSIM_MAX_YAML_DEPTH=N")


def test_non_finite_topology_figures_name_the_file_and_key(tmp_path):
    dev = "device: {name: X, peak_flops: %s, efficiency: 0.5, memory: 80 GB}\n"
    for dims, flops, key in (("{topology: switch, size: 8, bandwidth: .inf, latency: 1 us}", "1e15",
                              "dimensions[0].bandwidth"),
                             ("{topology: switch, size: 8, bandwidth: 1e999, latency: 1 us}", "1e15",
                              "dimensions[0].bandwidth"),
                             ("{topology: switch, size: 8, bandwidth: 1e9, latency: .nan}", "1e15",
                              "dimensions[0].latency"),
                             ("{topology: switch, size: 8, bandwidth: 1e9, latency: 1e-6}", ".inf",
                              "device.peak_flops"),
                             ("{topology: switch, size: 8, bandwidth: 1e9, latency: 1e-6}", "1e999",
                              "device.peak_flops")):
        p = tmp_path / "t.yaml"
        p.write_text(f"dimensions:\n  - {dims}\n" + dev % flops)
        err = _refused(["simulate", "--topology", str(p)], "finite number")
        assert f"{p}: {key}:" in err


# ---- outputs -------------------------------------------------------------------------------------------

def _bad_destinations(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    return [
        (str(tmp_path / "missing-dir" / "out.x"), "does not exist"),
        (str(tmp_path / ("n" * 300 + ".x")), "too long"),
        (str(blocker / "out.x"), "not a directory"),
        ("/proc/ringsim-out.x", "does not take new files"),  # a file system that refuses new files, even to root
        (str(tmp_path), "is a directory"),
    ]


OUTPUT_COMMANDS = [
    ["memory", "-o", "{}"],
    ["plan", "--world-size", "2", "--seq-len", "64", "-o", "{}"],
    ["simulate", "--seq-len", "16K", "-o", "{}"],
    ["simulate", "--seq-len", "16K", "--trace", "{}"],
    ["compare", "--seq-len", "16K", "--trace", "{}"],
    ["sweep", "--seq-len", "16K", "-j", "1", "-o", "{}"],
    ["sweep", "--seq-len", "16K", "-j", "1", "--report", "{}"],
    ["calibrate", TRACE, "-o", "{}"],
    ["validate", TRACE, "-o", "{}"],
    ["report", TRACE, "-o", "{}"],
]


@pytest.mark.parametrize("argv", OUTPUT_COMMANDS, ids=[" ".join(a[:1] + a[-2:-1]) for a in OUTPUT_COMMANDS])
def test_unwritable_outputs_are_one_line_exit_2(tmp_path, argv):
    before = sorted(os.listdir(tmp_path))
    for path, needle in _bad_destinations(tmp_path):
        _refused([a.replace("{}", path) for a in argv], needle)
    assert sorted(os.listdir(tmp_path)) == sorted(before + ["a-file"])  # nothing written anywhere


def test_run_trace_destination_checked_before_the_ranks_start(tmp_path, capsys):
    pytest.importorskip("torch")
    from ringsim.cli import main

    with pytest.raises(SystemExit) as e:
        main(["run", "--world-size", "2", "--seq-len", "64", "--trace", str(tmp_path / "no" / "t.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and "does not exist" in err[-1] and len(err) == 1


@pytest.mark.parametrize("argv", [
    ["sweep", "--seq-len", "16K", "-j", "1", "-o", "out.csv", "--report", "missing-dir/r.html"],
    ["simulate", "--seq-len", "16K", "-o", "out.json", "--trace", "missing-dir/t.json"],
    ["compare", "--seq-len", "16K", "-o", "out.json", "--trace", "missing-dir/t.json"],
    ["sweep", "--seq-len", "16K", "-j", "1", "-o", "same.csv", "--report", "same.csv"],
])
def test_every_destination_is_checked_before_any_is_written(tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    _refused(argv, "missing-dir" if "missing-dir" in " ".join(argv) else "both name")
    assert os.listdir(tmp_path) == []


def test_sweep_output_problems_fail_before_any_point(tmp_path, monkeypatch):
    import sys

    import ringsim.sweep as sw

    calls = []
    monkeypatch.setattr(sw, "run_point", lambda p: calls.append(p))
    _refused(["sweep", "--seq-len", "16K", "-j", "1", "-o", str(tmp_path / "missing-dir" / "out.csv")],
             "does not exist")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    _refused(["sweep", "--seq-len", "16K", "-j", "1", "--format", "parquet", "-o", str(tmp_path / "o.parquet")],
             "needs pyarrow")
    assert calls == [] and os.listdir(tmp_path) == []
