"""Calibration recovers known parameters from synthetic measured timelines."""
import json

import numpy as np
import pytest

from ringsim.calibration import (CalibratedCost, TableFit, calibrate, fit_line_nonneg, fit_roofline,
                                 load_calibration, load_measured, write_calibration)
from ringsim.costs import CostContext, classify_blocks
from ringsim.schedules import Plan
from ringsim.strategies import build_ring
from ringsim.timeline import Timeline
from ringsim.topoload import load_topology
from ringsim.units import InputError
from ringsim.workload import ModelSpec, Workload

# the "hardware" the synthetic runs come from: per (phase, kind) overhead_s and seconds per pair
TRUE = {("fwd", "full"): (1e-3, 2e-8), ("fwd", "diagonal"): (2e-3, 3e-8), ("fwd", "lower"): (2e-3, 3e-8),
        ("fwd", "partial"): (1.5e-3, 2.5e-8),
        ("bwd", "full"): (3e-3, 5e-8), ("bwd", "diagonal"): (4e-3, 7e-8), ("bwd", "lower"): (4e-3, 7e-8),
        ("bwd", "partial"): (3e-3, 6e-8)}
LAT, BW = 50e-6, 1e9
WL_DIMS = {"heads": 4, "kv_heads": 4, "head_dim": 64, "batch": 1, "dtype": "fp32", "layers": 1}


def synth_run(schedule, G, T, phase="fwd", iters=3, noise=0.03, seed=0, cores=None, slow=1.0, dims=WL_DIMS):
    """A measured-looking timeline: at each step every rank posts a send to r+1 / receive from r−1
    (rendezvous: the transfer takes LAT + bytes/BW) and computes for overhead + pairs × spp (× slow,
    × noise); the next step starts when every rank is done (a global step clock)."""
    rng = np.random.default_rng(seed)
    plan = Plan(schedule, G, T, "causal")
    kinds = classify_blocks(plan.pairs, plan.tokens_per_rank)
    model = ModelSpec("m", 1, dims["heads"], dims["kv_heads"], dims["head_dim"])
    wl = Workload(model, T, dims["batch"], dims["dtype"])
    shard = wl.shard_bytes(plan.tokens_per_rank)
    fpp_scale = wl.flops_per_pair() / (4 * 4 * 64)  # TRUE is per pair of the 4-head, 64-dim workload
    rows = []
    t = 0.0
    phases = ["fwd"] if phase == "fwd" else ["fwd", "bwd"]
    for it in range(iters):
        for ph in phases:
            for s in range(G):
                ends = []
                for r in range(G):
                    p = int(plan.pairs[r, s])
                    if p > 0:
                        a, b = TRUE[(ph, str(kinds[r, s]))]
                        dur = (a + b * p * fpp_scale) * slow * (1 + noise * rng.uniform(-1, 1))
                    else:
                        dur = 1e-5
                    rows.append((r, s, ph, "compute", t, t + dur, -1, 0.0, float(p), 0.0))
                    ends.append(t + dur)
                    if s < G - 1:
                        x = (LAT + shard / BW) * (1 + noise * rng.uniform(-1, 1))
                        rows.append((r, s, ph, "send", t, t + x, (r + 1) % G, float(shard), 0.0, 0.0))
                        rows.append(((r + 1) % G, s, ph, "recv", t, t + x, r, float(shard), 0.0, 0.0))
                        ends.append(t + x)
                t = max(ends) + 1e-6
    meta = {"source": "measured", "schedule": schedule, "world_size": G, "seq_len": T, "mask": "causal",
            "phase": phase, "workload": dict(dims), "backend": "gloo", "device": "cpu",
            "cpu_cores": cores or G, "threads_per_rank": 1, "host": "synthetic"}
    return Timeline.from_records(rows, meta)


def ring_ctx(schedule, G, T, wl, phase="fwd", topo=None):
    """The pricing context of a ring of ``schedule`` on the CPU host (or ``topo``)."""
    return CostContext(build_ring(Plan(schedule, G, T, "causal"), wl, phase), wl, topo or load_topology("localhost-cpu"))


def blocks(cost, ctx, phase="fwd"):
    """The cost model's seconds of the ring's blocks of one phase, ``[rank, step]``."""
    f = ctx.program.flat
    rows = [n for n in range(f.N) if f.step_phase[n] == phase and f.has_compute[n]]
    return cost.step_seconds(ctx)[rows].T


def kinds_of(ctx):
    plan = ctx.program.plan
    return classify_blocks(plan.pairs, plan.tokens_per_rank)


def _runs(specs, **kw):
    return [(f"{s}-G{G}-T{T}-{ph}", synth_run(s, G, T, ph, seed=i, **kw)) for i, (s, G, T, ph) in enumerate(specs)]


TRAIN = [(s, 4, T, "fwd+bwd") for s in ("contiguous", "striped", "zigzag") for T in (1024, 2048, 4096)]


@pytest.fixture(scope="module")
def doc():
    return calibrate(_runs(TRAIN))


def test_recovers_compute_parameters(doc):
    for (phase, kind), (a, b) in TRUE.items():
        e = doc["compute"][phase][kind]
        r = e["roofline"]
        assert r["overhead_s"] >= 0 and r["seconds_per_pair"] > 0
        assert r["seconds_per_pair"] == pytest.approx(b, rel=0.08), (phase, kind)
        assert r["overhead_s"] == pytest.approx(a, rel=0.35, abs=3e-4), (phase, kind)
        assert e["chosen"] in ("roofline", "table", "power")
        assert 0 <= e["roofline"]["mape_loo"] < 0.05 and e["table"]["mape_loo"] >= 0
        assert e["mape"] == pytest.approx(min(e[m]["mape_loo"] for m in ("roofline", "table", "power")),
                                          abs=1e-9)
    assert doc["compute_mape"] < 0.05
    assert [t["path"] for t in doc["traces"]] == [f"{s}-G{G}-T{T}-{ph}" for s, G, T, ph in TRAIN]
    assert doc["hardware"]["host"] == "synthetic"


def test_recovers_link_parameters(doc):
    link = doc["links"]["loopback"]  # gloo/cpu traces are the loopback class
    assert link["latency_s"] == pytest.approx(LAT, rel=0.5)
    assert link["bandwidth_Bps"] == pytest.approx(BW, rel=0.05)
    assert link["mape"] < 0.05
    assert doc["trace_link_class"] == "loopback"


def test_nonneg_fit_when_data_pushes_intercept_negative():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    t = -0.5 + 1.0 * x  # the unconstrained line has intercept −0.5
    a, b = fit_line_nonneg(x, t)
    assert a == 0.0 and b > 0
    # through the origin, minimising relative error: b = Σ(x/t) / Σ(x/t)²
    w = x / t
    assert b == pytest.approx(w.sum() / (w * w).sum())
    # decreasing data: the slope would be negative → constant
    a, b = fit_line_nonneg(np.array([1.0, 2.0]), np.array([2.0, 1.0]))
    assert b == 0.0 and a > 0
    # exact line is recovered exactly
    a, b = fit_line_nonneg(np.array([1.0, 2.0, 5.0]), np.array([3.0, 5.0, 11.0]))
    assert (a, b) == (pytest.approx(1.0), pytest.approx(2.0))
    # medians resist one wild sample per size
    x = np.repeat([1.0, 2.0, 3.0], 5)
    t = 1.0 + 2.0 * x
    t[0] = 1000.0
    assert fit_roofline(x, t) == (pytest.approx(1.0), pytest.approx(2.0))


def test_nonneg_intercept_through_calibrate():
    # transfers whose duration grows faster than linearly would want a negative latency
    runs = _runs([("contiguous", 2, T, "fwd") for T in (1024, 2048, 4096)])
    for _, tl in runs:
        d = tl.df
        m = d["kind"].isin(["send", "recv"])
        d.loc[m, "end_s"] = d.loc[m, "start_s"] + (d.loc[m, "bytes"] / 1e9) ** 1.5 * 30
    doc = calibrate(runs)
    assert doc["links"]["loopback"]["latency_s"] >= 0
    for phase in doc["compute"].values():
        for e in phase.values():
            if "roofline" in e:
                assert e["roofline"]["overhead_s"] >= 0


def test_table_model_interpolates_and_scales():
    m = TableFit([100.0, 200.0], [1.0, 3.0])
    np.testing.assert_allclose(m.predict(np.array([150.0, 400.0, 50.0])), [2.0, 6.0, 0.5])
    assert TableFit.from_dict(m.to_dict()).to_dict() == m.to_dict()


def test_calibrated_cost_transfers_to_other_sizes_and_dims(tmp_path, doc):
    path = tmp_path / "calib.json"
    write_calibration(doc, str(path))
    cost = load_calibration(path)
    assert isinstance(cost, CalibratedCost)
    topo = load_topology("localhost-cpu")
    # other world size (2), schedule, length, and twice the heads: the per-pair cost doubles
    wl = Workload(ModelSpec("m2", 1, 8, 8, 64), 8192, 1, "fp32")
    ctx = ring_ctx("zigzag", 2, 8192, wl, "fwd+bwd", topo)
    plan = ctx.program.plan
    kinds = kinds_of(ctx)
    for phase in ("fwd", "bwd"):
        got = blocks(cost, ctx, phase)
        for r in range(2):
            for s in range(2):
                kind = str(kinds[r, s])
                e = doc["compute"][phase][kind]
                assert e["chosen"] in ("roofline", "table", "power")
                a, b = TRUE[(phase, kind)]
                want = a + b * plan.pairs[r, s] * 2
                assert got[r, s] == pytest.approx(want, rel=0.1), (phase, r, s)


def test_empty_blocks_and_unknown_kind_fallback(doc):
    cost = CalibratedCost(doc)
    topo = load_topology("localhost-cpu")
    wl = Workload(ModelSpec("m", 1, 4, 4, 64), 4096, 1, "fp32")
    ctx = ring_ctx("contiguous", 4, 4096, wl, "fwd", topo)
    plan = ctx.program.plan
    got = blocks(cost, ctx)
    empty = plan.pairs == 0
    np.testing.assert_allclose(got[empty], doc["compute"]["fwd"]["empty"]["seconds"])
    # a sliding window makes partial blocks: the fitted partial kind is used
    plan = Plan("contiguous", 4, 4096, "sliding:300")
    ctx = CostContext(build_ring(plan, wl, "fwd"), wl, topo)
    got = blocks(cost, ctx)
    r = doc["compute"]["fwd"]["partial"]["roofline"]
    k = (kinds_of(ctx) == "partial")
    assert k.any()
    if doc["compute"]["fwd"]["partial"]["chosen"] == "roofline":
        np.testing.assert_allclose(got[k], r["overhead_s"] + r["seconds_per_pair"] * plan.pairs[k])


def _oversubscribed_calibration() -> dict:
    """Calibrated on G=2 runs (a core each) plus two G=4 runs on 2 cores whose blocks take 2× their
    core time."""
    base = _runs([(s, 2, T, "fwd") for s in ("contiguous", "zigzag") for T in (1024, 2048, 4096)])
    over = [(f"over-{i}", synth_run(s, 4, T, "fwd", seed=10 + i, cores=2, slow=2.0))
            for i, (s, T) in enumerate([("contiguous", 2048), ("zigzag", 4096)])]
    for _, tl in base:
        tl.meta["cpu_cores"] = 2
    return calibrate(base + over)


def test_core_sharing_factor_is_fitted_and_applied():
    doc = _oversubscribed_calibration()  # 4 ranks on 2 cores, every block 2× slower: load 2 → gamma 1
    c = doc["contention"]
    assert c["applied"] and c["gamma"] == pytest.approx(1.0, abs=0.1)
    assert c["ratio_by_load"]["2"] == pytest.approx(2.0, rel=0.1)
    cost = CalibratedCost(doc)
    assert cost.load_factor(2) == 1.0
    assert cost.load_factor(4) == pytest.approx(2.0, rel=0.1)
    assert set(c["by_load"]) == {"2"}  # the load-2 runs also get a fit of their own
    # a 4-rank ring on the 2-core host: each block ≈ 2 × its 1-rank-per-core time
    wl = Workload(ModelSpec("m", 1, 4, 4, 64), 4096, 1, "fp32")
    ctx = ring_ctx("zigzag", 4, 4096, wl)
    plan, kinds = ctx.program.plan, kinds_of(ctx)
    got = blocks(cost, ctx)
    for r in range(4):
        for s in range(4):
            a, b = TRUE[("fwd", str(kinds[r, s]))]
            assert got[r, s] == pytest.approx(2 * (a + b * plan.pairs[r, s]), rel=0.1)
    # a 2-rank ring fits the cores: the base fit
    ctx2 = ring_ctx("zigzag", 2, 4096, wl)
    got2 = blocks(cost, ctx2)
    a, b = TRUE[("fwd", str(kinds_of(ctx2)[0, 1]))]
    assert got2[0, 1] == pytest.approx(a + b * ctx2.program.plan.pairs[0, 1], rel=0.1)


def test_apply_to_topology_per_class_and_fallback(doc):
    cost = CalibratedCost(doc)
    topo = cost.apply_to_topology(load_topology("localhost-cpu"))
    for h in topo.ring_hops(4):  # a hop crosses cpu→shm→cpu: route latency = the fitted one
        assert h["latency_s"] == pytest.approx(doc["links"]["loopback"]["latency_s"])
        assert h["bottleneck_Bps"] == pytest.approx(doc["links"]["loopback"]["bandwidth_Bps"])
    # no loopback class on a DGX: the trace's class fit describes every link
    dgx = cost.apply_to_topology(load_topology("dgx-h100-8"))
    bw = doc["links"]["loopback"]["bandwidth_Bps"]
    assert all(l.bandwidth_Bps == pytest.approx(bw) for l in dgx.links)
    for h in dgx.ring_hops(8):
        assert h["latency_s"] == pytest.approx(doc["links"]["loopback"]["latency_s"])


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_measured([str(tmp_path / "missing.json")])
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    with pytest.raises(InputError, match="not a trace"):
        load_measured([str(bad)])
    no_compute = Timeline.from_records([(0, 0, "fwd", "send", 0.0, 1.0, 1, 10.0, 0.0, 0.0)],
                                       {"world_size": 2})
    with pytest.raises(InputError, match="no compute rows"):
        calibrate([("x", no_compute)])
    with pytest.raises(InputError, match="does not exist"):
        load_calibration(tmp_path / "nope.json")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(InputError, match="not a ringsim calibration"):
        load_calibration(tmp_path / "other.json")


def test_cli_calibrate_writes_json_and_exit_codes(tmp_path, capsys):
    from ringsim.cli import main

    paths = []
    for i, (lab, tl) in enumerate(_runs([("zigzag", 2, 1024, "fwd"), ("zigzag", 2, 2048, "fwd")])):
        p = tmp_path / f"run{i}.json"
        tl.write(p)
        paths.append(str(p))
    out = tmp_path / "calib.json"
    with pytest.raises(SystemExit) as e:
        main(["calibrate", *paths, "-o", str(out), "--format", "json"])
    assert e.value.code == 0
    doc = json.loads(out.read_text())
    assert doc["format"] == "ringsim-calibration/1" and doc["traces"][0]["path"] == paths[0]
    printed = json.loads(capsys.readouterr().out)
    assert printed["output"] == str(out)
    with pytest.raises(SystemExit) as e:
        main(["calibrate", str(tmp_path / "missing.json"), "-o", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err


def test_one_size_kind_never_takes_another_kinds_intercept():
    # one length: each kind is seen at one size only, the pooled fit spans two sizes (diagonal, full)
    # and finds an intercept; a one-size kind cannot tell an intercept from a per-pair cost, so it
    # goes through the origin and its own median (issue 12: no intercept shared across kinds)
    doc = calibrate(_runs([("contiguous", 2, 2048, "fwd")], noise=0.0))
    pooled = doc["compute"]["fwd"]["*"]
    assert pooled["n_sizes"] == 2
    for kind in ("diagonal", "full"):
        e = doc["compute"]["fwd"][kind]
        r = e["roofline"]
        assert e["n_sizes"] == 1 and e["chosen"] == "roofline" and "roofline_overhead_from" not in e
        x, t = e["table"]["pairs"][0], e["table"]["seconds"][0]
        assert r["overhead_s"] == 0.0
        assert r["seconds_per_pair"] * x == pytest.approx(t)
        # twice the work, twice the time
        from ringsim.calibration.fits import entry_from_dict
        assert entry_from_dict(e).predict([2 * x])[0] == pytest.approx(2 * t)


def test_core_time_s_takes_time_sharing_out():
    import pandas as pd

    from ringsim.calibration import core_time_s

    # A and B run [0, 3], C runs [1, 2], 2 slots: n = 2, 3, 2 on the three unit segments
    blocks = pd.DataFrame({"start_s": [0.0, 0.0, 1.0], "end_s": [3.0, 3.0, 2.0]})
    got = core_time_s(blocks, 2.0)
    assert got == pytest.approx([1 + 2 / 3 + 1, 1 + 2 / 3 + 1, 2 / 3], rel=1e-12)
    # enough slots: the block time itself
    assert core_time_s(blocks, 3.0) == pytest.approx([3.0, 3.0, 1.0], rel=1e-12)


def _ring2(phase="fwd"):
    """The flat program of a 2-rank ring (messages 0 → 1 and 1 → 0 at every step but the last)."""
    return build_ring(Plan("contiguous", 2, 8, "causal"), Workload(ModelSpec("m", 1, 1, 1, 8), 8, dtype="fp32"),
                      phase).flat


def test_share_cores_fluid_ring_by_hand():
    from ringsim.calibration import share_cores

    # 2 ranks on 1 core, forward only; work [rank, step] in core-seconds
    W = np.array([[1.0, 0.5], [2.0, 1.0]])
    f2 = _ring2()
    d = share_cores(f2, W.T, 1.0).T
    # t=0: both run at 1/2 → rank 0 ends step 0 at 2 (rank 1 has 1 left); rank 0 step 1 (rank 1 has
    # started step 0) at 1/2 → ends at 3 (rank 1: 0.5 left); rank 1 alone → step 0 ends at 3.5,
    # step 1 at 4.5
    assert d == pytest.approx(np.array([[2.0, 1.0], [3.5, 1.0]]), rel=1e-12)
    # a core per rank: durations are the work
    assert share_cores(f2, W.T, 2.0).T == pytest.approx(W, rel=1e-12)
    # forward + backward (steps: fwd 0, 1; bwd 0, 1; the bwd's return step without work): rank 0's
    # backward starts when its forward ends, and still shares
    Wb = np.array([[1.0, 1.0], [1.0, 1.0]])
    fb = _ring2("fwd+bwd")
    d = share_cores(fb, np.concatenate([W.T, Wb.T, np.zeros((1, 2))]), 1.0)
    f, b = d[:2].T, d[2:4].T
    # rank 0 ends its forward at 3 and starts its backward at once, so rank 1's step 0 (0.5 left)
    # still runs at 1/2 → ends at 4; rank 1's step 1 then shares with rank 0's bwd step 0 until 5
    # (rank 0 done: 3→5 at 1/2) and runs alone 5→5.5; rank 0's bwd step 1 waits for rank 1 to post
    # (5.5); both bwd blocks share 5.5→7.5; rank 1's last block alone 7.5→8.5
    assert f == pytest.approx(np.array([[2.0, 1.0], [4.0, 1.5]]), rel=1e-12)
    assert b == pytest.approx(np.array([[2.0, 2.0], [2.0, 1.0]]), rel=1e-12)
    assert d[4] == pytest.approx([0.0, 0.0])  # the return step has no block
    # one core, always busy: rank 1 (never blocked) ends at the total work
    assert f[1].sum() + b[1].sum() == pytest.approx(W.sum() + Wb.sum(), rel=1e-12)


def test_oversubscribed_ring_uses_processor_sharing():
    """A calibration with a load-2 level predicts a 4-rank ring on 2 cores by sharing: balanced
    zigzag blocks each take 2× their core time, contiguous rank 3 speeds up once others are done."""
    from ringsim.calibration import share_cores

    doc = _oversubscribed_calibration()
    assert doc["contention"]["sharing"]["slots"] == 2.0
    cost = CalibratedCost(doc)
    wl = Workload(ModelSpec("m", 1, 4, 4, 64), 4096, 1, "fp32")
    level = doc["contention"]["by_load"]["2"]
    for sched in ("contiguous", "zigzag"):
        ctx = ring_ctx(sched, 4, 4096, wl)
        f = ctx.program.flat
        core, _ = cost._blocks(ctx, level)
        delay = np.full(core.shape, level["gap_s"]["fwd"])
        delay[0] = level["gap_s"]["first"]
        # the ring's transfers take core time too: the fitted core-seconds of one KV shard
        tf = level["transfer"]
        xfer = tf["latency_s"] + f.bytes / tf["bandwidth_Bps"]
        assert f.M == 12 and xfer[0] > 0
        want = share_cores(f, core, 2.0, delay, xfer)
        assert cost.step_seconds(ctx) == pytest.approx(want, rel=1e-12)
        without = share_cores(f, core, 2.0, delay)
        assert np.all(want[0] > without[0] * 1.01)  # step 0: the four transfers share the cores too
    # contiguous: rank 0 computes one block, so later steps of the others run faster than 2×
    ctx = ring_ctx("contiguous", 4, 4096, wl)
    got = blocks(cost, ctx)
    core = cost._blocks(ctx, level)[0].T
    gap = level["gap_s"]["fwd"]
    assert got[3, 3] == pytest.approx(core[3, 3] + gap, rel=1e-9)  # alone at the end: a core of its own
    assert got[3, 0] > 1.5 * core[3, 0]  # step 0: four ranks on two cores


def test_share_cores_transfers_take_core_time_by_hand():
    from ringsim.calibration import fluid_program, share_cores

    # 2 ranks, 1 core, forward only. Step 0 posts transfers 0 → 1 and 1 → 0 (1 core-second each):
    # t = 0..2: four things at 1/4 → rank 0's block (0.5) ends at 2; the other three have 0.5
    # left and run at 1/3 → all end at 3.5; rank 0 waits for its transfers until then (not part of
    # its block); both step-1 blocks share 3.5 → 5.5
    W = np.array([[0.5, 1.0], [1.0, 1.0]])
    f2 = _ring2()
    X = np.array([1.0, 1.0])
    d = share_cores(f2, W.T, 1.0, None, X).T
    assert d == pytest.approx(np.array([[2.0, 2.0], [3.5, 2.0]]), rel=1e-12)
    start, end, xs, xe = fluid_program(f2, W.T, np.zeros((2, 2)), X, 1.0)
    assert xs == pytest.approx([0.0, 0.0]) and xe == pytest.approx([3.5, 3.5], rel=1e-12)
    assert start[1] == pytest.approx([3.5, 3.5], rel=1e-12)
    assert f2.M == 2  # the last step posts nothing
    # a core for everything (4 slots): every duration is its work, transfers overlap the blocks
    assert share_cores(f2, W.T, 4.0, None, X).T == pytest.approx(W, rel=1e-12)


def test_core_time_inverts_the_fluid_ring_with_transfers():
    """Round trip: the processor-sharing replay (forward model) of fwd+bwd ring programs on random
    work, then core_time_s / transfer_core_time_s (the inverse the calibration applies to measured
    runs) on its block and transfer intervals give the work back."""
    import pandas as pd

    from ringsim.calibration import core_time_s, fluid_program, transfer_core_time_s

    rng = np.random.default_rng(7)
    for G, slots in ((4, 2.0), (3, 1.0), (5, 2.0)):
        f = build_ring(Plan("zigzag", G, 8 * G, "causal"), Workload(ModelSpec("m", 1, 1, 1, 8), 8 * G, dtype="fp32"),
                       "fwd+bwd").flat
        W = rng.uniform(0.2, 2.0, (f.N, G)) * f.has_compute[:, None]  # no work at the return step
        X = rng.uniform(0.05, 1.0, f.M)
        start, end, xs, xe = fluid_program(f, W, np.zeros_like(W), X, slots)
        blocks_ = pd.DataFrame({"start_s": start.ravel(), "end_s": end.ravel()})
        tr = pd.DataFrame({"start_s": xs, "end_s": xe})
        assert core_time_s(blocks_, slots, tr) == pytest.approx(W.ravel(), rel=1e-9, abs=1e-12)
        assert transfer_core_time_s(tr, blocks_, slots) == pytest.approx(X, rel=1e-9)
        # without the transfers the blocks look more expensive than they were
        assert np.all(core_time_s(blocks_, slots) >= W.ravel() - 1e-9)


def test_block_gaps_net_of_the_rings_transfers():
    import pandas as pd

    from ringsim.calibration import block_gaps_s

    # one rank, one iteration: blocks [0, 1] and [3, 4] of steps 0, 1; its step-0 transfers end at
    # 2.5 (the one it receives) and 1.5 (the one it sends)
    blocks = pd.DataFrame({"rank": [0, 0], "phase": ["fwd", "fwd"], "step": [0, 1], "iter": [0, 0],
                           "start_s": [0.0, 3.0], "end_s": [1.0, 4.0]})
    tr = pd.DataFrame({"rank": [1, 0], "peer": [0, 1], "phase": ["fwd", "fwd"], "step": [0, 0], "iter": [0, 0],
                       "end_s": [2.5, 1.5]})
    assert block_gaps_s(blocks).tolist() == [0.0, 2.0]
    assert block_gaps_s(blocks, tr).tolist() == [0.0, 0.5]  # 2.5 → 3: not the transfer's wait


def test_power_and_rows_fits_and_two_size_tie_break():
    from ringsim.calibration import ModelChoice, fit_power, fit_rows

    x = np.array([1e5, 1e5, 4e5, 1.6e6])
    t = 2e-6 * x ** 0.75
    c, al = fit_power(x, t)
    assert al == pytest.approx(0.75, rel=1e-9) and c == pytest.approx(2e-6, rel=1e-9)
    assert fit_power(np.array([10.0]), np.array([5.0])) == (pytest.approx(0.5), 1.0)  # one size: ∝
    # per-row + per-pair: t = a·√x + b·x recovered exactly
    t = 3e-6 * np.sqrt(x) + 2e-8 * x
    a, b = fit_rows(x, t)
    assert a == pytest.approx(3e-6, rel=1e-9) and b == pytest.approx(2e-8, rel=1e-9)
    # two sizes: every candidate predicts one size from the other alone (proportionally), so the
    # scores tie and the rows model is kept; it then passes through both sizes
    xs = np.array([1e5, 1.6e6])
    choice = ModelChoice.fit(xs, 3e-6 * np.sqrt(xs) + 2e-8 * xs)
    e = choice.to_dict()
    assert e["chosen"] == "rows"
    assert e["rows"]["mape_loo"] == pytest.approx(e["power"]["mape_loo"], rel=1e-9)
    assert choice.predict(np.array([4e5]))[0] == pytest.approx(3e-6 * np.sqrt(4e5) + 2e-8 * 4e5, rel=1e-9)
    # typed round trip: the file's entry predicts as the fitted object does
    back = ModelChoice.from_dict(json.loads(json.dumps(e)))
    assert back.predict(np.array([2e5, 9e5])) == pytest.approx(choice.predict(np.array([2e5, 9e5])), rel=1e-15)
    assert back.to_dict() == e and "rows" in back.describe()


def test_share_cores_delay_is_off_core():
    from ringsim.calibration import share_cores

    # one core; rank 0 waits 1 s to be scheduled before its first block: rank 1 has the core alone
    W = np.array([[1.0, 0.0], [1.0, 0.0]])
    delay = np.array([[1.0, 0.0], [0.0, 0.0]])
    f2 = _ring2()
    d = share_cores(f2, W.T, 1.0, delay.T).T
    assert d == pytest.approx(np.array([[2.0, 0.0], [1.0, 0.0]]), rel=1e-12)
    # a core per rank: duration = delay + work
    d = share_cores(f2, W.T, 2.0, (delay + 0.5).T).T
    assert d == pytest.approx(W + delay + 0.5, rel=1e-12)


def test_dispersion_draws_are_seeded_and_centred():
    runs = _runs([(s, 2, T, "fwd") for s in ("contiguous", "zigzag") for T in (1024, 2048, 4096)])
    doc = calibrate(runs)
    q = np.asarray(doc["dispersion"]["fwd"])
    assert len(q) == 21 and np.all(np.diff(q) >= 0)
    assert q[10] == pytest.approx(1.0, abs=0.02)  # the fit passes through the per-size medians
    assert q[0] < 1.0 < q[-1]  # the synthetic runs carry ±3 % noise
    cost = CalibratedCost(doc)
    wl = Workload(ModelSpec("m", 1, 4, 4, 64), 4096, 1, "fp32")
    ctx = ring_ctx("zigzag", 2, 4096, wl)
    nominal = cost.step_seconds(ctx)
    a, b = cost.with_dispersion(1).step_seconds(ctx), cost.with_dispersion(1).step_seconds(ctx)
    assert np.array_equal(a, b)  # seeded
    assert not np.array_equal(a, cost.with_dispersion(2).step_seconds(ctx))
    ratio = a / nominal
    assert np.all((ratio >= q[0] - 1e-12) & (ratio <= q[-1] + 1e-12))  # drawn from the quantiles


def test_unmeasured_load_level_shares_cores_with_the_nearest_levels_fits():
    """8 ranks on the 2-core host (load 4) when only load 2 was measured: processor sharing with the
    load-2 level's core-second, transfer and gap fits (a core-second does not depend on the load)."""
    from ringsim.calibration import share_cores
    from ringsim.validate import localhost_cpu

    doc = _oversubscribed_calibration()
    level = doc["contention"]["by_load"]["2"]
    assert set(doc["contention"]["by_load"]) == {"2"} and "transfer" in level
    cost = CalibratedCost(doc)
    wl = Workload(ModelSpec("m", 1, 4, 4, 64), 4096, 1, "fp32")
    ctx = ring_ctx("zigzag", 8, 4096, wl, topo=localhost_cpu(8))
    f = ctx.program.flat
    core, _ = cost._blocks(ctx, level)
    delay = np.full(core.shape, level["gap_s"]["fwd"])
    delay[0] = level["gap_s"]["first"]
    xfer = level["transfer"]["latency_s"] + f.bytes / level["transfer"]["bandwidth_Bps"]
    want = share_cores(f, core, 2.0, delay, xfer)
    assert cost.step_seconds(ctx) == pytest.approx(want, rel=1e-12)
    # 8 ranks on 2 cores: a balanced ring's blocks take about 4× their core-seconds
    assert np.median(want[1:] / core[1:]) > 3.0


def test_localhost_cpu_widens_to_the_runs_world_size():
    from ringsim.validate import localhost_cpu

    assert localhost_cpu(4).num_gpus == 4 and localhost_cpu(2).name == "localhost-cpu"
    t = localhost_cpu(8)
    base = load_topology("localhost-cpu")
    assert t.num_gpus == 8 and len(t.links) == 16 and t.name == "localhost-cpu[8]"
    hops = t.ring_hops(8)
    assert all(len(h["route"]) == 2 for h in hops)  # cpu r → shm → cpu r+1, as in the preset
    assert t.route_latency_s(hops[5]["route"]) == pytest.approx(base.route_latency_s(base.ring_hops(4)[1]["route"]))
    assert {l.link_class for l in t.links} == {"loopback"}


def test_summary_names_the_sharing_levels_fits():
    from ringsim.cli.calibrate_cmd import summary_rows

    doc = _oversubscribed_calibration()
    rows = {r["component"]: r for r in summary_rows(doc)}
    level = doc["contention"]["by_load"]["2"]
    assert "load 2 fwd full (core-s)" in rows and rows["load 2 fwd full (core-s)"]["n"] == level["fwd"]["full"]["n_samples"]
    assert rows["load 2 transfer (core-s)"]["fit"].endswith("GB/s")
    assert f"fwd {level['gap_s']['fwd'] * 1e3:.3g} ms" in rows["load 2 off-core gap"]["fit"]


def test_calls_on_a_share_of_the_heads_count_as_that_share_of_the_work():
    """A Ulysses call runs T × T pairs on H/U heads: calibrating on a Ulysses run must give the same
    per-pair cost (per head) as calibrating on a ring run of the same roofline device."""
    from ringsim.costs import RooflineCost
    from ringsim.simulate import SimSpec, simulate_point
    from ringsim.topoload import load_topology
    from ringsim.workload import ModelSpec, Workload

    m = ModelSpec(name="toy", layers=1, heads=4, kv_heads=4, head_dim=64)
    per_pair = {}
    for s in ("zigzag", "ulysses"):
        spec = SimSpec(workload=Workload(m, 2048, 1, "fp32"), topology=load_topology("localhost-cpu"), schedule=s,
                       world_size=4, mask="causal", phase="fwd", cost_model=RooflineCost())
        doc = calibrate([(s, simulate_point(spec, keep_timeline=True)["_timeline"])])
        per_pair[s] = doc["compute"]["fwd"]["*"]["roofline"]["seconds_per_pair"]
    assert per_pair["ulysses"] == pytest.approx(per_pair["zigzag"], rel=1e-9)
