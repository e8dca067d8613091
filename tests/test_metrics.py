"""Metrics on hand-made timelines: unions, overlap, idle, imbalance, critical path, hide block."""
import math

import pytest

from ringsim.costs import RooflineCost
from ringsim.metrics import critical_path, hide_block_tokens, ring_memory_bytes, ring_metrics
from ringsim.schedules import Plan
from ringsim.timeline import Timeline
from ringsim.topology import Device, Link, Topology
from ringsim.workload import ModelSpec, Workload


def tl(rows):
    return Timeline.from_records(rows)


# 2 ranks, 2 steps. Rank 0: compute 0-4, 5-7; its send 1-3 (hidden), recv 2-6 (half hidden: 2-4 and 5-6).
# Rank 1: compute 0-2, 6-10; send 2-6 (overlapping its compute 2? no: compute 0-2 ends at 2 → 0 hidden),
# recv 1-3 (hidden 1-2); wait 2-6.
ROWS = [
    (0, 0, "fwd", "compute", 0.0, 4.0, 0, 0, 10, 40),
    (0, 1, "fwd", "compute", 5.0, 7.0, 1, 0, 5, 20),
    (0, 0, "fwd", "send", 1.0, 3.0, 1, 100, 0, 0),
    (0, 0, "fwd", "recv", 2.0, 6.0, 1, 100, 0, 0),
    (1, 0, "fwd", "compute", 0.0, 2.0, 1, 0, 5, 20),
    (1, 1, "fwd", "compute", 6.0, 10.0, 0, 0, 10, 40),
    (1, 0, "fwd", "send", 2.0, 6.0, 0, 100, 0, 0),
    (1, 0, "fwd", "recv", 1.0, 3.0, 0, 100, 0, 0),
    (1, 0, "fwd", "wait", 2.0, 6.0, -1, 0, 0, 0),
]


def test_ring_metrics_by_hand():
    m = ring_metrics(tl(ROWS), 2)
    assert m["layer_makespan_s"] == 10.0
    r0, r1 = m["per_rank"]
    assert (r0["compute_s"], r1["compute_s"]) == (6.0, 6.0)
    # rank 0 transfers in flight: union of 1-3 and 2-6 = 1-6 → 5 s; hidden inside 0-4 ∪ 5-7: 1-4 and 5-6 = 4 s
    assert r0["transfer_s"] == 5.0
    # rank 1: union of 2-6 and 1-3 = 1-6 → 5 s; hidden inside 0-2 ∪ 6-10: 1-2 = 1 s
    assert r1["transfer_s"] == 5.0
    assert m["overlap"] == pytest.approx((4.0 + 1.0) / 10.0)
    assert r1["wait_s"] == 4.0 and r0["wait_s"] == 0.0
    assert r0["idle_s"] == 4.0 and r1["idle_s"] == 4.0
    assert m["ideal_bound_s"] == 6.0 and m["efficiency"] == pytest.approx(0.6)
    assert m["imbalance"] == 1.0
    assert r0["bytes_sent"] == 100 and r1["end_s"] == 10.0


def test_critical_path_by_hand():
    # the timeline above as a 2-rank ring's engine arrays: rank 1's step 1 (6-10) started at 6 when
    # its send 1->0 (2-6) finished: the path is compute(1, s1) 4 s ← hop 1->0 4 s ← (both posted at
    # 0) ← nothing before step 0.
    import numpy as np

    from ringsim.engines import EngineArrays
    from ringsim.strategies import build_ring

    wl = Workload(ModelSpec("m", 1, 1, 1, 8), 4, dtype="fp32")
    prog = build_ring(Plan("contiguous", 2, 4, "full"), wl, "fwd")
    f = prog.flat
    assert (f.src.tolist(), f.dst.tolist()) == ([0, 1], [1, 0])
    arrays = EngineArrays(np.array([[0.0, 0.0], [5.0, 6.0], [7.0, 10.0]]), np.array([[4.0, 2.0], [7.0, 10.0]]),
                          np.array([1.0, 2.0]), np.array([3.0, 6.0]))
    cp = critical_path(prog, arrays, np.array([[4.0, 2.0], [2.0, 4.0]]))
    assert cp["compute_s"] == {"1": 4.0}
    assert cp["hops_s"] == {"1->0": 4.0}
    assert cp["holder"] in ("rank 1 compute", "hop 1->0")


def test_hide_block_quadratic():
    dev = Device("d", peak_flops=1e12, efficiency=0.5, memory_bytes=1e9)
    links = [Link(0, "g0", "g1", 1e9, 2e-6, "x"), Link(1, "g1", "g0", 1e9, 2e-6, "x")]
    topo = Topology("t", dev, ["g0", "g1"], links)
    wl = Workload(ModelSpec("m", layers=1, heads=2, kv_heads=1, head_dim=64), 1024, dtype="fp16")
    a = 4 * 2 * 64 / 0.5e12  # s per pair
    b = 2 * 64 * 2 / 1e9  # s per token of shard
    c = (b + math.sqrt(b * b + 4 * a * 2e-6)) / (2 * a)
    hops = hide_block_tokens(wl, topo, 2, RooflineCost())
    assert [h["hide_block_tokens"] for h in hops] == [math.ceil(c)] * 2
    # a block at that size hides the transfer; one token less does not
    n = hops[0]["hide_block_tokens"]
    assert a * n * n >= 2e-6 + b * n and a * (n - 1) ** 2 < 2e-6 + b * (n - 1)
    # a causal ring's half-dense blocks need larger blocks
    assert hide_block_tokens(wl, topo, 2, RooflineCost(), density=0.5)[0]["hide_block_tokens"] > n


def test_hide_block_follows_the_cost_model():
    """The cost model owns seconds: a model twice as slow per call hides a transfer with smaller
    blocks than the roofline (the block grows as c², the transfer as c)."""
    dev = Device("d", peak_flops=1e12, efficiency=0.5, memory_bytes=1e9)
    links = [Link(0, "g0", "g1", 1e9, 2e-6, "x"), Link(1, "g1", "g0", 1e9, 2e-6, "x")]
    topo = Topology("t", dev, ["g0", "g1"], links)
    wl = Workload(ModelSpec("m", layers=1, heads=2, kv_heads=1, head_dim=64), 1024, dtype="fp16")

    class Slow(RooflineCost):
        def call_seconds(self, *a, **k):
            return 2.0 * super().call_seconds(*a, **k)

    base = hide_block_tokens(wl, topo, 2, RooflineCost())[0]["hide_block_tokens"]
    slow = hide_block_tokens(wl, topo, 2, Slow())[0]["hide_block_tokens"]
    assert slow < base
    a, b = 2 * 4 * 2 * 64 / 0.5e12, 2 * 64 * 2 / 1e9
    assert a * slow * slow >= 2e-6 + b * slow and a * (slow - 1) ** 2 < 2e-6 + b * (slow - 1)


def test_ring_memory():
    wl = Workload(ModelSpec("m", layers=4, heads=2, kv_heads=1, head_dim=8), 64, dtype="bf16")
    p = Plan("zigzag", 2, 64)
    fwd = ring_memory_bytes(p, wl, "fwd")
    n = 32
    q = n * 2 * 8 * 2
    shard = 2 * n * 1 * 8 * 2
    assert fwd["ring_working_set_bytes"] == q + q + (n * 2 * 8 * 4 + n * 2 * 4) + 3 * shard
    assert fwd["kv_shard_per_gpu_bytes"] == 4 * shard
    single = ring_memory_bytes(p, wl, "fwd", double_buffer=False)
    assert fwd["ring_working_set_bytes"] - single["ring_working_set_bytes"] == shard
    assert ring_memory_bytes(p, wl, "fwd+bwd")["peak_memory_bytes"] > fwd["peak_memory_bytes"]


def test_closed_form_transfer_equals_the_sweep_on_drawn_rings():
    """program_metrics' per-(rank, step) closed form for rings (at most a send and a receive per
    step, each waited in its step) equals the general interval sweep, on rings of every knob."""
    from hypothesis import HealthCheck, given, settings

    from ringsim.engines import simulate_ring
    from ringsim.metrics import program_metrics
    from test_engines import ring_cases

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(ring_cases())
    def check(case):
        plan, wl, topo, cost, phase, knobs = case
        res = simulate_ring(plan, wl, topo, cost, phase, knobs, engine="des")
        a = program_metrics(res.program, res.arrays)
        b = program_metrics(res.program, res.arrays, closed_form=False)
        # the sweep shifts rank r's times by r × (makespan + 1 s) × 2 to sort all ranks at once, so its
        # own rounding is about eps × G × (makespan + 1 s); the closed form has none of that
        G = plan.world_size
        tol = 1e-14 * G * (res.layer_makespan_s + 1.0)
        for ra, rb in zip(a["per_rank"], b["per_rank"]):
            for k in ra:
                assert abs(ra[k] - rb[k]) <= tol + 1e-12 * abs(rb[k]), k
        total = sum(r["transfer_s"] for r in b["per_rank"])
        assert abs(a["overlap"] - b["overlap"]) <= 1e-9 + G * tol / max(total, 1e-300)

    check()
