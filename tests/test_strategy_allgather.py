"""The all-gather strategy's programs: hand-worked timelines, the engines against each other,
exact work and bytes, memory, and the configurations it refuses.

Setup of the hand-worked cases (as tests/test_engine_golden.py): G GPUs behind one switch, every
directed link 1e9 B/s and 1 µs, so a transfer of b bytes takes 2 µs + b / 1e9 s. The toy model
(1 layer, 1 head, head dim 50, fp32) has 400 B of K/V per token; 20 tokens per rank make an
8000 B part (10 µs), two parts 16000 B (18 µs). Compute times are set by hand per (phase, step).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from ringsim.engines import Knobs, simulate_program
from ringsim.strategies import AllGather, NotApplicable, parse_strategy
from ringsim.units import InputError
from ringsim.workload import Workload, get_model
from test_engine_golden import MODEL, run_strategy, strategy_rows, switch_topology
from test_engines import _nodes, assert_same_result

US = 1e-6
N = 20  # tokens per rank


def toy(G):
    return Workload(MODEL, seq_len=N * G, dtype="fp32")


rows = strategy_rows


def run(spec, G, fwd, bwd=None, engine="des"):
    return run_strategy(spec, toy(G), G, fwd, bwd, engine)


@pytest.mark.parametrize("engine", ["fast", "des", "reference"])
def test_two_ranks_gather_then_compute_literal(engine):
    res = run("allgather", 2, [[0, 5], [0, 7]], engine=engine)
    assert rows(res) == sorted([
        (0, "fwd", 0, "send", 0, 10, 1, 8000.0), (0, "fwd", 0, "recv", 0, 10, 1, 8000.0),
        (0, "fwd", 0, "wait", 0, 10, -1, 0.0), (0, "fwd", 1, "compute", 10, 15, -1, 0.0),
        (1, "fwd", 0, "send", 0, 10, 0, 8000.0), (1, "fwd", 0, "recv", 0, 10, 0, 8000.0),
        (1, "fwd", 0, "wait", 0, 10, -1, 0.0), (1, "fwd", 1, "compute", 10, 17, -1, 0.0),
    ])
    assert res.layer_makespan_s == pytest.approx(17 * US, rel=1e-12)


@pytest.mark.parametrize("engine", ["des", "reference"])
def test_two_ranks_backward_regathers_then_reduce_scatters_literal(engine):
    """bwd starts where each rank's fwd ended (15, 17); the re-gather waits for both (17..27);
    backward calls 4 and 6 µs; the reduce-scatter step reduces for 1 µs, then posts its send
    (rank 0 at 32, rank 1 at 34) into receives posted at the step's start (31, 33): 0→1 runs
    33..43, 1→0 34..44 (8000 B of fp32 dK/dV); a last reduce of 1 µs."""
    res = run("allgather", 2, [[0, 5], [0, 7]], [[0, 4, 1, 1], [0, 6, 1, 1]], engine=engine)
    bwd = [r for r in rows(res) if r[1] == "bwd"]
    assert bwd == sorted([
        (0, "bwd", 0, "send", 17, 27, 1, 8000.0), (0, "bwd", 0, "recv", 17, 27, 1, 8000.0),
        (0, "bwd", 0, "wait", 15, 27, -1, 0.0), (0, "bwd", 1, "compute", 27, 31, -1, 0.0),
        (0, "bwd", 2, "compute", 31, 32, -1, 0.0), (0, "bwd", 2, "send", 33, 43, 1, 8000.0),
        (0, "bwd", 2, "recv", 34, 44, 1, 8000.0), (0, "bwd", 2, "wait", 32, 44, -1, 0.0),
        (0, "bwd", 3, "compute", 44, 45, -1, 0.0),
        (1, "bwd", 0, "send", 17, 27, 0, 8000.0), (1, "bwd", 0, "recv", 17, 27, 0, 8000.0),
        (1, "bwd", 0, "wait", 17, 27, -1, 0.0), (1, "bwd", 1, "compute", 27, 33, -1, 0.0),
        (1, "bwd", 2, "compute", 33, 34, -1, 0.0), (1, "bwd", 2, "send", 34, 44, 0, 8000.0),
        (1, "bwd", 2, "recv", 33, 43, 0, 8000.0), (1, "bwd", 2, "wait", 34, 44, -1, 0.0),
        (1, "bwd", 3, "compute", 44, 45, -1, 0.0),
    ])
    assert res.layer_makespan_s == pytest.approx(45 * US, rel=1e-12)


def test_tree_saves_a_latency_per_doubling_on_a_switch():
    """G = 4: the ring gathers in 3 steps of one part (3 × 10 µs), recursive doubling in 2 steps of
    one then two parts (10 + 18 µs): the same bytes, one latency fewer. Compute 5 µs after."""
    fwd = [[0, 0, 0, 5]] * 4
    ring = run("allgather", 4, fwd)
    tree = run("allgather:tree", 4, [[0, 0, 5]] * 4)
    assert ring.layer_makespan_s == pytest.approx(35 * US, rel=1e-12)
    assert tree.layer_makespan_s == pytest.approx(33 * US, rel=1e-12)
    sent = lambda r: sorted(r.timeline.of_kind("send").groupby("rank")["bytes"].sum().tolist())
    assert sent(ring) == sent(tree) == [3 * 8000.0] * 4  # every rank sends every other rank its part once
    peers = tree.timeline.of_kind("send")
    assert sorted(zip(peers["rank"], peers["step"], peers["peer"], peers["bytes"])) == sorted(
        [(r, 0, r ^ 1, 8000.0) for r in range(4)] + [(r, 1, r ^ 2, 16000.0) for r in range(4)])


@pytest.mark.parametrize("spec", ["allgather", "allgather:tree"])
def test_work_is_exact_and_balanced(spec):
    G, T = 8, 8 * 64
    wl = Workload(get_model("llama3-8b"), T)
    for mask, total in (("causal", T * (T + 1) // 2), ("full", T * T)):
        f = parse_strategy(spec).build(wl, G, mask, "fwd+bwd").flat
        per_rank = {p: f.work_pairs[[i for i, s in enumerate(f.step_phase) if s == p]].sum(axis=0) for p in ("fwd", "bwd")}
        for p in ("fwd", "bwd"):
            assert per_rank[p].sum() == total and np.all(per_rank[p] == per_rank[p][0])  # zigzag: balanced
        # the calls: chunk r against keys [0, (r+1)m), chunk 2G-1-r against [0, (2G-r)m)
        m = T // G // 2
        if mask == "causal":
            r = 3
            want = m * (r + 1) * m - m * (m - 1) // 2 + m * (2 * G - r) * m - m * (m - 1) // 2
            assert per_rank["fwd"][r] == want


@pytest.mark.parametrize("spec", ["allgather", "allgather:tree"])
def test_bytes_per_rank_and_direction(spec):
    G, T = 8, 8 * 64
    wl = Workload(get_model("llama3-8b"), T)
    f = parse_strategy(spec).build(wl, G, "causal", "fwd+bwd").flat
    phase = np.array(f.step_phase)[f.post_step]
    for p, per_part in (("fwd", wl.shard_bytes(T // G)), ("bwd", wl.shard_bytes(T // G) + wl.grad_shard_bytes(T // G))):
        sel = phase == p
        sent = np.bincount(f.src[sel], weights=f.bytes[sel], minlength=G)
        got = np.bincount(f.dst[sel], weights=f.bytes[sel], minlength=G)
        assert np.all(sent == (G - 1) * per_part) and np.all(got == sent)


@pytest.mark.parametrize("spec", ["allgather", "allgather:tree"])
def test_des_equals_reference_and_fast_where_exact(spec):
    G = 8
    wl = Workload(get_model("llama3-8b"), 64 * G)
    prog = parse_strategy(spec).build(wl, G, "causal", "fwd+bwd")
    topo = _nodes(G, 4)  # two nodes behind one uplink each: contended
    for knobs in (Knobs(), Knobs(True, False, True)):
        assert_same_result(simulate_program(prog, wl, topo, knobs=knobs, engine="des"),
                           simulate_program(prog, wl, topo, knobs=knobs, engine="reference"))
    sw = switch_topology(G, bw=50e9)
    auto = simulate_program(prog, wl, sw)
    assert auto.engine == "fast"
    assert_same_result(auto, simulate_program(prog, wl, sw, engine="des"))


def test_memory_holds_the_whole_sequence_kv():
    wl = Workload(get_model("llama3-70b"), 1 << 17)
    ag = AllGather().memory(wl, 8, "causal", "fwd+bwd")
    ring = parse_strategy("zigzag").memory(wl, 8, "causal", "fwd+bwd")
    full = wl.shard_bytes(1 << 17)
    assert ag["ring_working_set_bytes"] >= 2 * full + 2 * wl.grad_shard_bytes(1 << 17)
    assert ag["kv_shard_per_gpu_bytes"] == ring["kv_shard_per_gpu_bytes"]
    assert ag["peak_memory_bytes"] > ring["peak_memory_bytes"]


def test_refusals_name_the_reason():
    wl = Workload(get_model("llama3-8b"), 6 * 64)
    with pytest.raises(NotApplicable, match="power-of-two"):
        parse_strategy("allgather:tree").build(wl, 6, "causal", "fwd")
    with pytest.raises(NotApplicable, match="sliding"):
        parse_strategy("allgather").build(wl, 4, "sliding:64", "fwd")
    with pytest.raises(InputError, match="nearest valid lengths"):
        parse_strategy("allgather").build(Workload(get_model("llama3-8b"), 100), 4, "causal", "fwd")
    with pytest.raises(InputError, match="allgather:ring or allgather:tree"):
        parse_strategy("allgather:star")


def test_a_thousand_ranks_build_fast():
    import time

    wl = Workload(get_model("llama3-8b"), 1 << 20)
    t = time.perf_counter()
    prog = parse_strategy("allgather").build(wl, 1024, "causal", "fwd+bwd")
    assert time.perf_counter() - t < 2.0 and math.isclose(prog.flat.work_pairs.sum() / 2, (1 << 20) * ((1 << 20) + 1) / 2)
