"""Validation against simulated-then-perturbed timelines: known signed errors come back exactly."""
import json

import numpy as np
import pandas as pd
import pytest

from ringsim.calibration import calibrate, write_calibration
from ringsim.engines import simulate_ring
from ringsim.schedules import Plan
from ringsim.timeline import Timeline
from ringsim.topoload import load_topology
from ringsim.units import InputError
from ringsim.validate import measured_makespan_s, validate_runs, validate_timeline
from ringsim.workload import ModelSpec, Workload

DIMS = {"heads": 4, "kv_heads": 4, "head_dim": 64, "dtype": "fp32", "batch": 1, "layers": 1}


def measured_like(schedule, G, T, phase="fwd", scale=1.0, iters=2, gap_s=0.01):
    """Simulate with the roofline on localhost-cpu, stretch every time by ``scale`` and repeat it
    ``iters`` times one after another: a 'measured' run whose truth we know."""
    wl = Workload(ModelSpec("m", 1, 4, 4, 64), T, 1, "fp32")
    res = simulate_ring(Plan(schedule, G, T, "causal"), wl, load_topology("localhost-cpu"), phase=phase)
    df = res.timeline.df.copy()
    df["start_s"] *= scale
    df["end_s"] *= scale
    span = float(df["end_s"].max())
    parts = []
    for i in range(iters):
        d = df.copy()
        d["start_s"] += i * (span + gap_s) + 0.5
        d["end_s"] += i * (span + gap_s) + 0.5
        parts.append(d)
    meta = {"source": "measured", "schedule": schedule, "world_size": G, "seq_len": T, "mask": "causal",
            "phase": phase, "workload": dict(DIMS), "device": "cpu", "backend": "gloo", "cpu_cores": 2,
            "threads_per_rank": 1}
    return Timeline(pd.concat(parts, ignore_index=True), meta), res


def test_exact_signed_makespan_error():
    tl, res = measured_like("zigzag", 4, 4096, "fwd+bwd", scale=1.25, iters=3)
    ms, spans = measured_makespan_s(tl)
    assert len(spans) == 3
    assert ms == pytest.approx(1.25 * res.layer_makespan_s, rel=1e-12)
    v, pred = validate_timeline(tl, label="t")
    assert v["iterations"] == 3
    assert v["predicted_makespan_s"] == pytest.approx(res.layer_makespan_s, rel=1e-12)
    assert v["makespan_error"] == pytest.approx(1 / 1.25 - 1, rel=1e-9)  # −20 %
    assert len(v["per_rank"]) == 4
    for r in v["per_rank"]:
        assert r["compute_error"] == pytest.approx(-0.2, rel=1e-9)
        assert r["transfer_error"] == pytest.approx(-0.2, rel=1e-9)
        assert r["measured_compute_s"] == pytest.approx(1.25 * r["predicted_compute_s"], rel=1e-9)
    fwd = [s for s in v["per_step"] if s["phase"] == "fwd"]
    bwd = [s for s in v["per_step"] if s["phase"] == "bwd"]
    assert [s["step"] for s in fwd] == [0, 1, 2, 3] and [s["step"] for s in bwd] == [0, 1, 2, 3, 4]  # 4: the return
    for s in v["per_step"]:
        if (s["phase"], s["step"]) == ("bwd", 4):  # the return: messages, no block
            assert s["measured_compute_s"] is None and s["transfer_error"] == pytest.approx(-0.2, rel=1e-9)
            continue
        for k in ("compute_error", "end_error"):
            assert s[k] == pytest.approx(-0.2, rel=1e-9), (s, k)
        if s["predicted_wait_s"]:
            assert s["measured_wait_s"] == pytest.approx(1.25 * s["predicted_wait_s"], rel=1e-9)
    assert any(s["predicted_wait_s"] for s in v["per_step"])  # the bwd ring's last step waits
    assert v["schedule"] == "zigzag" and v["topology"] == "localhost-cpu"


def test_unperturbed_is_zero_error_and_slow_rank_shows_up():
    tl, _ = measured_like("contiguous", 2, 2048, "fwd", gap_s=1.0)
    v, _ = validate_timeline(tl)
    assert v["makespan_error"] == pytest.approx(0.0, abs=1e-12)
    # rank 1's last block (nothing follows it) computes 50 % longer in the 'measurement'
    d = tl.df
    m = (d["rank"] == 1) & (d["kind"].astype(str) == "compute") & (d["step"] == 1)
    last = float((d.loc[m, "end_s"] - d.loc[m, "start_s"]).iloc[0])
    d.loc[m, "end_s"] = d.loc[m, "start_s"] + 1.5 * (d.loc[m, "end_s"] - d.loc[m, "start_s"])
    v, _ = validate_timeline(tl)
    r0, r1 = v["per_rank"]
    assert r0["compute_error"] == pytest.approx(0.0, abs=1e-12)
    pred = r1["predicted_compute_s"]
    assert r1["measured_compute_s"] == pytest.approx(pred + 0.5 * last, rel=1e-9)
    assert r1["compute_error"] == pytest.approx(pred / (pred + 0.5 * last) - 1, rel=1e-9)
    assert v["makespan_error"] < 0


def test_schedule_ranking_matches_and_mismatches():
    runs = [(s, measured_like(s, 4, 4096, "fwd", scale=1.1)[0]) for s in ("contiguous", "striped", "zigzag")]
    doc, pairs = validate_runs(runs)
    assert len(doc["cases"]) == 3 and len(pairs) == 3
    (rank,) = doc["schedule_ranking"]
    assert rank["ranking_matches"] and rank["measured_order"] == rank["predicted_order"]
    for s, sp in rank["speedup_vs_contiguous"].items():
        assert sp["measured"] == pytest.approx(sp["predicted"], rel=1e-9)
    assert doc["makespan_error"] == pytest.approx(1 / 1.1 - 1, rel=1e-9)
    # the fastest predicted schedule measured 3× slower: the ranking no longer matches
    fastest = rank["predicted_order"][0]
    runs = [(s, measured_like(s, 4, 4096, "fwd", scale=3.0 if s == fastest else 1.0)[0])
            for s in ("contiguous", "striped", "zigzag")]
    doc, _ = validate_runs(runs)
    assert doc["schedule_ranking"][0]["ranking_matches"] is False
    assert doc["ranking_matches"] is False
    assert doc["worst_case"] == fastest


def test_with_calibration_recovers_its_own_timeline(tmp_path):
    # calibrate on 'measured' runs that are the simulator's own output: validation then predicts them
    runs = [(f"{s}{T}", measured_like(s, 2, T, "fwd")[0]) for s in ("contiguous", "zigzag") for T in (2048, 4096)]
    for _, tl in runs:
        tl.meta["cpu_cores"] = 4
    doc = calibrate(runs)
    write_calibration(doc, str(tmp_path / "c.json"))
    from ringsim.calibration import load_calibration

    cost = load_calibration(tmp_path / "c.json")
    v, _ = validate_timeline(measured_like("striped", 2, 8192, "fwd")[0], cost)
    # per-kind per-pair fits transfer to another schedule and length; roofline truth is linear in pairs
    assert abs(v["makespan_error"]) < 0.05


def test_bad_inputs(tmp_path, capsys):
    tl, _ = measured_like("zigzag", 2, 2048)
    tl.meta.pop("workload")
    with pytest.raises(InputError, match="lacks workload"):
        validate_timeline(tl)
    from ringsim.cli import main

    p = tmp_path / "t.json"
    tl.write(p)
    with pytest.raises(SystemExit) as e:
        main(["validate", str(p)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lacks workload" in err
    with pytest.raises(SystemExit) as e:
        main(["validate", str(p), "--calibration", str(tmp_path / "none.json")])
    assert e.value.code == 2


def test_cli_json(tmp_path, capsys):
    from ringsim.cli import main

    tl, _ = measured_like("zigzag", 2, 2048, scale=0.8)
    p = tmp_path / "t.json"
    tl.write(p)
    with pytest.raises(SystemExit) as e:
        main(["validate", str(p), "--format", "json"])
    assert e.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"makespan_error", "per_rank", "per_step"} <= set(doc)
    assert doc["makespan_error"] == pytest.approx(1 / 0.8 - 1, rel=1e-9)


# tolerances: issue 5's targets (10 % at world size 2, 15 % at 4). reports/calib-cpu-gloo.json is fitted
# on every committed run; calib-cpu-gloo-T1024-T4096.json never saw T = 3072 (a held-out check)
COMMITTED = [("cpu-gloo_w2_zigzag_causal_fwdbwd_T4096.json", "calib-cpu-gloo.json", 0.10),
             ("cpu-gloo_w4_zigzag_causal_fwdbwd_T4096.json", "calib-cpu-gloo.json", 0.15),
             ("cpu-gloo_w2_contiguous_causal_fwdbwd_T4096.json", "calib-cpu-gloo.json", 0.10),
             ("cpu-gloo_w2_zigzag_causal_fwdbwd_T3072.json", "calib-cpu-gloo-T1024-T4096.json", 0.10),
             ("cpu-gloo_w4_contiguous_causal_fwdbwd_T3072.json", "calib-cpu-gloo-T1024-T4096.json", 0.15)]


@pytest.mark.parametrize("name,calib,tol", COMMITTED)
def test_committed_trace_against_committed_calibration(name, calib, tol):
    """Regression guard for the measured reference data and the calibrations fitted from it
    (reports/, see reports/README.md): the simulator with the calibration predicts these runs'
    makespan within the stated tolerance."""
    import os

    from ringsim.calibration import load_calibration
    from ringsim.timeline import read_timeline

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tl = read_timeline(os.path.join(root, "traces", name))
    cost = load_calibration(os.path.join(root, "reports", calib))
    v, _ = validate_timeline(tl, cost, label=name)
    assert abs(v["makespan_error"]) <= tol, v["makespan_error"]
    assert v["iterations"] >= 3 and v["world_size"] == tl.meta["world_size"]
    # one program: the simulator sends what the runtime sent at every (phase, step), the return included
    G = v["world_size"]
    steps = {(s["phase"], s["step"]): s for s in v["per_step"]}
    assert ("bwd", G) in steps and steps[("bwd", G)]["predicted_transfer_s"] is not None
    for st in v["per_step"]:
        assert st["measured_bytes"] == st["predicted_bytes"], st


def test_held_out_world_size_4_schedule_speedup_within_target():
    """The G = 4 (oversubscribed: 4 ranks on 2 cores) forward runs at T = 2048, predicted from the
    calibration that never saw T = 2048: every makespan within 15 % and the zigzag-over-contiguous
    speedup within 0.1 of the measured one (issue 5's targets; this configuration is where the
    old core-sharing model missed, see reports/README.md), and the striped fwd+bwd run within 15 %."""
    import os

    from ringsim.calibration import load_calibration
    from ringsim.timeline import read_timeline

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cost = load_calibration(os.path.join(root, "reports", "calib-cpu-gloo-T1024-T4096.json"))
    got = {}
    for sched, phase in (("contiguous", "fwd"), ("zigzag", "fwd"), ("striped", "fwd"), ("striped", "fwdbwd")):
        name = f"cpu-gloo_w4_{sched}_causal_{phase}_T2048.json"
        v, _ = validate_timeline(read_timeline(os.path.join(root, "traces", name)), cost, label=name)
        assert abs(v["makespan_error"]) <= 0.15, (name, v["makespan_error"])
        got[(sched, phase)] = (v["measured_makespan_s"], v["predicted_makespan_s"])
    (mc, pc), (mz, pz) = got[("contiguous", "fwd")], got[("zigzag", "fwd")]
    assert abs(pc / pz - mc / mz) <= 0.1, (pc / pz, mc / mz)


def test_calibrated_at_one_length_predicts_twice_that_length():
    """Issue 12's CPU target on the committed runs of traces/cpu-gloo-length/ (one quiet sitting,
    benchmarks/bench_calibration_length.py): calibrated on G = 2 contiguous and zigzag forward runs
    at T = 4096 only, the T = 8192 runs are predicted within 10 %. Each kind seen at one size is a
    line through the origin (no intercept borrowed from another kind)."""
    import os

    from ringsim.calibration import calibrate, load_calibration
    from ringsim.timeline import read_timeline

    d = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "traces", "cpu-gloo-length")
    name = "cpu-gloo_w2_{}_causal_fwd_T{}.json"
    fit = [(s, read_timeline(os.path.join(d, name.format(s, 4096)))) for s in ("contiguous", "zigzag")]
    doc = calibrate(fit)
    for kind, entry in doc["compute"]["fwd"].items():
        if kind not in ("*", "empty", "memory_ops"):
            assert entry["n_sizes"] == 1 and entry["roofline"]["overhead_s"] == 0.0, kind
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "calib.json")
        with open(path, "w") as f:
            json.dump(doc, f)
        cost = load_calibration(path)
    for s in ("contiguous", "zigzag"):
        tl = read_timeline(os.path.join(d, name.format(s, 8192)))
        v, _ = validate_timeline(tl, cost, label=s)
        assert abs(v["makespan_error"]) <= 0.10, (s, v["makespan_error"])


def test_a_step_with_several_calls_is_one_block():
    """All-gather's rank computes its two zigzag chunks as two calls at one step: the calibration
    sees one block per (rank, phase, step, iteration) whose pairs are the calls' sum, the step's
    work the cost model prices (before, each call got the whole step's time: +85-114 % held-out
    errors on the strategy runs)."""
    import os

    import numpy as np

    from ringsim.calibration import assign_iterations, block_samples
    from ringsim.timeline import read_timeline

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "traces",
                        "cpu-gloo-strategies", "cpu-gloo_w2_allgather_causal_fwd_T2048.json")
    tl = read_timeline(path)
    df = tl.df.copy()
    df["iter"] = assign_iterations(df)
    comp = df[df["kind"] == "compute"]
    per_step = comp.groupby(["rank", "phase", "step", "iter"], observed=True)["pairs"].agg(["size", "sum"])
    assert (per_step["size"] == 2).all()  # two calls per step in this run
    b = block_samples(tl).set_index(["rank", "phase", "step", "iter"]).sort_index()
    assert len(b) == len(per_step)
    assert np.allclose(b["pairs"].to_numpy(), per_step.sort_index()["sum"].to_numpy())
    # the block spans both calls and the merges after them
    first = comp.groupby(["rank", "phase", "step", "iter"], observed=True)["start_s"].min().sort_index()
    assert (b["end_s"].to_numpy() >= comp.groupby(["rank", "phase", "step", "iter"], observed=True)["end_s"].max()
            .sort_index().to_numpy()).all()
    assert (b["start_s"].to_numpy() <= first.to_numpy() + 1e-12).all()


def test_a_blocks_memory_ops_are_measured_and_priced_by_their_bytes():
    """All-gather's ``gather`` copy runs before its calls: the block starts at it (before, the
    block began at the first call and the copy — 0.5-3.7 ms a step on the committed runs — was in
    no block). The block's ``merge`` rows are its measured memory time; the calibration fits the
    kinds on the block less that time and the memory ops apart (``memory_ops``: latency + bytes ×
    seconds per byte), and prices a block as the sum."""
    import os

    import numpy as np

    from ringsim.calibration import assign_iterations, block_samples, calibrate, predict_blocks, predict_entry
    from ringsim.timeline import read_timeline

    d = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "traces", "cpu-gloo-strategies")
    tl = read_timeline(os.path.join(d, "cpu-gloo_w2_allgather_causal_fwd_T2048.json"))
    df = tl.df.copy()
    df["iter"] = assign_iterations(df)
    key = ["rank", "phase", "step", "iter"]
    merges = df[df["kind"] == "merge"]
    first_merge = merges.groupby(key, observed=True)["start_s"].min().sort_index()
    first_call = df[df["kind"] == "compute"].groupby(key, observed=True)["start_s"].min().sort_index()
    mem = (merges["end_s"] - merges["start_s"]).groupby([merges[k] for k in key], observed=True).sum().sort_index()
    assert (first_merge.to_numpy() < first_call.to_numpy()).all()  # the gather copy comes first
    b = block_samples(tl).set_index(key).sort_index()
    assert np.allclose(b["start_s"].to_numpy(), first_merge.to_numpy())
    assert np.allclose(b["memory_time_s"].to_numpy(), mem.to_numpy())
    assert (b["memory_bytes"] > 0).all()

    runs = [(n, read_timeline(os.path.join(d, f"cpu-gloo_w2_{n}_causal_fwd_T{T}.json")))
            for n in ("allgather", "ulysses") for T in (1024, 2048, 4096)]
    doc = calibrate(runs)
    ops = doc["compute"]["fwd"]["memory_ops"]
    assert ops["latency_s"] >= 0 and ops["seconds_per_byte"] > 0 and ops["n_sizes"] == 6
    B = block_samples(runs[1][1])
    B["work"] = B["pairs"] * B["head_share"]
    got = predict_blocks(doc["compute"], B)
    want = np.array([predict_entry(doc["compute"], "fwd", k, [w])[0] + ops["latency_s"] + m * ops["seconds_per_byte"]
                     for k, w, m in zip(B["kind"], B["work"], B["memory_bytes"])])
    assert np.allclose(got, want)
    # the kinds were fitted on the block less its memory ops: their fit stays below the block time
    assert np.median(predict_entry(doc["compute"], "fwd", "partial", B["work"]) / B["time_s"]) < 0.97


def _strategy_bench():
    """benchmarks/bench_strategy_validation.py as a module (its ``check`` is what the tests assert on)."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                        "bench_strategy_validation.py")
    spec = importlib.util.spec_from_file_location("bench_strategy_validation", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_strategy_runs_validate_at_a_held_out_length():
    """Issue 13: calibrated on the committed strategy runs (ulysses and allgather at G = 2 and 4,
    usp:2x2 at G = 4; fwd and fwd+bwd) at T = 1024, 2048 and 4096, every T = 3072 run is predicted
    within 15 % (benchmarks/bench_strategy_validation.py; held out at T = 2048 instead, the G = 2
    runs miss — see the README)."""
    bsv = _strategy_bench()
    rows = bsv.check(3072)
    assert len(rows) == 10 and {(r["strategy"], r["world_size"]) for r in rows} == {
        ("ulysses", 2), ("ulysses", 4), ("allgather", 2), ("allgather", 4), ("usp:2x2", 4)}
    for r in rows:
        assert abs(r["error"]) <= 0.15, r


def test_strategy_runs_validate_at_a_held_out_length_from_a_measured_profile(tmp_path, capsys):
    """Issue 12 (calibration starts from a measured profile) and 13: `ringsim calibrate --profile`
    with the CPU SDPA profile `ringsim profile-kernels --threads 1` measured on the host of the
    committed strategy runs: a block's work is the profile's time for its calls, so the call-shape
    dependence comes from the profile. Calibrated at T = 1024, 2048, 4096, every T = 3072 run is
    within 15 % (6.3 %, against 10.2 % from pairs)."""
    import os

    from ringsim.kernelprofile import load_profile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    d = os.path.join(root, "traces", "cpu-gloo-strategies")
    bsv = _strategy_bench()
    rows = bsv.check(3072, profile=load_profile(os.path.join(d, "cpu-sdpa-1thread.yaml")))
    assert len(rows) == 10
    for r in rows:
        assert abs(r["error"]) <= 0.15, r
    assert max(abs(r["error"]) for r in rows) < max(abs(r["error"]) for r in bsv.check(3072))
    # the command: the calibration records its basis and `validate` prices with it
    from ringsim.cli import main

    out = tmp_path / "c.json"
    fit = [os.path.join(d, f"cpu-gloo_w4_ulysses_causal_fwd_T{T}.json") for T in (1024, 2048, 4096)]
    with pytest.raises(SystemExit) as e:
        main(["calibrate", *fit, "--profile", os.path.join(d, "cpu-sdpa-1thread.yaml"), "-o", str(out)])
    assert e.value.code == 0
    assert "kernel profile cpu-sdpa-1thread" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["work_basis"]["kind"] == "profile-seconds" and doc["work_basis"]["profile"]["name"] == "cpu-sdpa-1thread"
    with pytest.raises(SystemExit) as e:
        main(["calibrate", *fit, "--profile", "no-such-profile", "-o", str(tmp_path / "x.json")])
    assert e.value.code == 2 and not (tmp_path / "x.json").exists()
    assert "neither a shipped profile nor an existing file" in capsys.readouterr().err


def test_memory_steps_are_priced_by_their_bytes():
    """All-gather's backward ends with steps that only move memory (the reduce-scatter's folds of
    the received dK/dV parts): the calibration fits them as latency + bytes (``memory``), the
    model prices them so (not as empty blocks, nor with the off-core gap of a kernel block), and
    a block's gap counts from the last transfer the rank finished before it (the all-to-alls and
    all-gathers of kernel-less steps), not only its previous block's step. Before: 6.9 ms predicted
    per memory step against 0.3-1.5 ms measured at G = 4, and a 24 ms "gap" before the first
    backward block of every strategy."""
    import os

    from ringsim.calibration import block_samples, calibrate, load_calibration, transfer_samples
    from ringsim.calibration.sharing import block_gaps_s
    from ringsim.timeline import read_timeline

    d = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "traces", "cpu-gloo-strategies")
    runs = [(f, read_timeline(os.path.join(d, f))) for f in
            (f"cpu-gloo_w{G}_allgather_causal_fwdbwd_T{T}.json" for G in (2, 4) for T in (1024, 2048, 4096))]
    doc = calibrate(runs)
    mem = doc["compute"]["bwd"]["memory"]
    assert mem["n_samples"] > 0 and mem["latency_s"] >= 0 and mem["seconds_per_byte"] >= 0
    tl = read_timeline(os.path.join(d, "cpu-gloo_w4_allgather_causal_fwdbwd_T3072.json"))
    b = block_samples(tl)
    assert set(b.loc[b["kind"] == "memory", "step"]) == {5, 6, 7} and (b.loc[b["kind"] == "memory", "pairs"] == 0).all()
    gaps = block_gaps_s(b, transfer_samples(tl))
    first_bwd = (b["phase"] == "bwd") & (b["kind"] == "partial")
    assert np.mean(gaps[first_bwd.to_numpy()]) < 5e-3  # the all-gather before it explains the wait
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "c.json")
        write_calibration(doc, path)
        v, _ = validate_timeline(tl, load_calibration(path))
    steps = {(s["phase"], s["step"]): s for s in v["per_step"]}
    for st in (5, 6, 7):
        s = steps[("bwd", st)]
        assert 0 < s["predicted_compute_s"] < 3e-3 and s["measured_compute_s"] < 3e-3, s
    assert abs(v["makespan_error"]) <= 0.15


def test_strategy_runs_at_the_issue_length_validate_held_out_from_a_measured_profile():
    """Issue 13's own length: the committed longer strategy runs (T = 3072, 4096, 6144, 8192; same
    strategies, one sitting) calibrated from the host's CPU kernel profile at T = 3072, 6144 and
    8192 predict every T = 4096 run within 15 % (benchmarks/bench_strategy_validation.py --dir
    traces/cpu-gloo-strategies-long --held-out 4096 [--profile …]), from the profile and from pairs."""
    import os

    from ringsim.kernelprofile import load_profile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    d = os.path.join(root, "traces", "cpu-gloo-strategies-long")
    bsv = _strategy_bench()
    rows = bsv.check(4096, d, profile=load_profile(os.path.join(d, "cpu-sdpa-1thread.yaml")))
    assert len(rows) == 10
    for r in rows:
        assert abs(r["error"]) <= 0.15, r
    # from pairs too, since a block's memory ops are fitted apart (before: 9 of 10, max 15.9 %; now
    # 10 of 10, max 14.9 %)
    rows = bsv.check(4096, d)
    assert len(rows) == 10 and all(abs(r["error"]) <= 0.15 for r in rows), rows


def test_a_second_sitting_of_strategy_runs_validates_at_every_held_out_length():
    """Issue 13 on the second committed sitting (traces/cpu-gloo-strategies-2/, its own CPU kernel
    profile): calibrated from the profile on the three other lengths, every run held out at
    T = 2048, 3072 and 4096 is predicted within 15 % (G = 2 and 4, fwd and fwd+bwd, all three
    strategies). Below the calibrated range (T = 1024 held out) it is not: calibrate on the range you
    predict."""
    import os

    from ringsim.kernelprofile import load_profile

    d = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "traces", "cpu-gloo-strategies-2")
    bsv = _strategy_bench()
    prof = load_profile(os.path.join(d, "cpu-sdpa-1thread.yaml"))
    for held_out in (2048, 3072, 4096):
        rows = bsv.check(held_out, d, profile=prof)
        assert len(rows) == 10, held_out
        assert all(abs(r["error"]) <= 0.15 for r in rows), (held_out, rows)
