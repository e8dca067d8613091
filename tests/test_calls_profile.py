"""Kernel profiles from measured runs (`ringsim calibrate --write-profile`, ringsim.calibration.kernels)."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ringsim.calibration.kernels import call_samples, profile_from_runs
from ringsim.calibration.measured import load_measured
from ringsim.kernelprofile import load_profile
from ringsim.timeline import read_timeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
W2 = sorted(glob.glob(os.path.join(ROOT, "traces", "cpu-gloo_w2_*.json")))


def test_every_call_of_a_committed_run_is_found_with_its_shape():
    """contiguous G = 2, fwd+bwd, T = 2048: rank 0 makes one causal call per phase, rank 1 a causal
    and a full one (its step-1 block), all 1024 × 1024; 7 iterations of each."""
    tl = read_timeline(os.path.join(ROOT, "traces", "cpu-gloo_w2_contiguous_causal_fwdbwd_T2048.json"))
    rows = call_samples(tl)
    shapes = sorted({(r["phase"], r["causal"], r["q_rows"], r["k_rows"], r["pairs"]) for r in rows})
    assert shapes == [("bwd", False, 1024, 1024, 1024 * 1024), ("bwd", True, 1024, 1024, 1024 * 1025 // 2),
                      ("fwd", False, 1024, 1024, 1024 * 1024), ("fwd", True, 1024, 1024, 1024 * 1025 // 2)]
    assert len(rows) == 7 * 2 * 3  # iterations × phases × (rank 0: 1 call, rank 1: 2)
    comp = tl.df[(tl.df["kind"] == "compute") & (tl.df["pairs"] > 0)]  # rank 0's empty step has a row too
    assert sorted(r["seconds"] for r in rows) == pytest.approx(sorted((comp["end_s"] - comp["start_s"]).tolist()))
    assert {r["heads"] for r in rows} == {4} and {r["head_dim"] for r in rows} == {64}


def test_profile_of_the_committed_runs_reproduces_them_and_predicts_twice_the_length():
    """The profile of the 24 committed G = 2 runs (T ≤ 4096) reproduces its own knots and every
    measured call shape, and priced with it the simulator predicts the T = 8192 runs of
    traces/cpu-gloo-length/ (another sitting, a length the profile never saw) within 10 %."""
    prof = profile_from_runs(load_measured(W2))
    knots = [p for p in prof.points if p.role == "knot"]
    refs = [p for p in prof.points if p.role == "reference"]
    assert knots and refs and all(p.q_rows == p.k_rows for p in knots)
    got = prof.predict_tflops_many(knots)
    assert got == pytest.approx([p.tflops for p in knots], rel=1e-6)
    # the half blocks of zigzag (rectangles, 256 × 512 up to 2048 × 1024) from the squares: within 20 %
    # (one thread: no occupancy loss to model; the rest is the loop-length curve)
    err = np.abs(prof.predict_tflops_many(refs) / np.array([p.tflops for p in refs]) - 1)
    assert err.max() < 0.20, err.max()

    from ringsim.simulate import SimSpec, simulate_point
    from ringsim.costs import ProfileCost
    from ringsim.topoload import load_topology
    from ringsim.validate import validate_timeline

    cost = ProfileCost(prof, "calls")
    for s in ("contiguous", "zigzag"):
        tl = read_timeline(os.path.join(ROOT, "traces", "cpu-gloo-length", f"cpu-gloo_w2_{s}_causal_fwd_T8192.json"))
        v, _ = validate_timeline(tl, cost, label=s)
        assert abs(v["makespan_error"]) <= 0.10, (s, v["makespan_error"])


def test_profile_needs_both_phases_and_a_core_per_rank():
    from ringsim.units import InputError

    fwd_only = [p for p in W2 if "_fwd_" in p]
    with pytest.raises(InputError, match="no square full bwd, causal bwd calls"):
        profile_from_runs(load_measured(fwd_only))
    w4 = sorted(glob.glob(os.path.join(ROOT, "traces", "cpu-gloo_w4_*fwdbwd_T1024.json")))
    with pytest.raises(InputError, match="oversubscribed"):
        profile_from_runs(load_measured(w4))


def test_cli_writes_the_profile_and_refuses_without_writing_anything(tmp_path):
    cli = [sys.executable, "-m", "ringsim.cli", "calibrate"]
    prof, calib = tmp_path / "p.yaml", tmp_path / "c.json"
    runs = [p for p in W2 if "T1024" in p or "T2048" in p]
    proc = subprocess.run(cli + runs + ["-o", str(calib), "--write-profile", str(prof), "--profile-name", "mine",
                                        "--format", "json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    p = load_profile(str(prof))
    assert out["profile"] == str(prof) and out["profile_points"] == len(p.points) and p.name == "mine"
    assert p.kernel["family"] == "cpu-sdpa" and p.device["threads"] == 1
    # the profile prices a simulation
    sim = subprocess.run([sys.executable, "-m", "ringsim.cli", "simulate", "--topology", "localhost-cpu",
                          "--world-size", "2", "--seq-len", "4096", "--heads", "4", "--kv-heads", "4", "--head-dim",
                          "64", "--dtype", "fp32", "--layers", "1", "--kernels", str(prof), "--format", "json"],
                         capture_output=True, text=True)
    assert sim.returncode == 0, sim.stderr
    assert json.loads(sim.stdout)["results"][0]["kernels"] == "mine"
    # fwd-only runs cannot give backward knots: one line, exit 2, neither file written
    prof2, calib2 = tmp_path / "p2.yaml", tmp_path / "c2.json"
    proc = subprocess.run(cli + [r for r in runs if "_fwd_" in r] + ["-o", str(calib2), "--write-profile", str(prof2)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not prof2.exists() and not calib2.exists()
