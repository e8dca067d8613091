"""Ulysses and USP programs: hand-worked timelines, engines against each other, exact work and
bytes, K/V-head replication, rank placement, and the configurations they refuse.

Hand-worked setup (as tests/test_engine_golden.py): GPUs behind one switch, links 1e9 B/s and
1 µs, so b bytes take 2 µs + b/1e9 s. The toy model: 1 layer, 2 query heads, 2 K/V heads, head dim
25, fp32; 20 tokens per rank. A Ulysses member's all-to-all piece is 20 tokens × 1 head: queries
2000 B + K/V 4000 B = 6000 B (8 µs); the output 2000 B + LSE 80 B = 2080 B (4.08 µs).
"""
from __future__ import annotations

import numpy as np
import pytest

from ringsim.engines import Knobs, simulate_program
from ringsim.engines.fast import inexact_reason
from ringsim.strategies import NotApplicable, parse_strategy
from ringsim.strategies.ulysses import kv_values_per_member
from ringsim.units import InputError
from ringsim.workload import ModelSpec, Workload, get_model
from test_engine_golden import HandCost, switch_topology, run_strategy, strategy_rows
from test_engines import _nodes, assert_same_result

US = 1e-6
TOY = ModelSpec("toy2", layers=1, heads=2, kv_heads=2, head_dim=25)


def toy(G):
    return Workload(TOY, seq_len=20 * G, dtype="fp32")


rows = strategy_rows


def run(spec, G, fwd, bwd=None, engine="des"):
    return run_strategy(spec, toy(G), G, fwd, bwd, engine)


@pytest.mark.parametrize("engine", ["fast", "des", "reference"])
def test_ulysses_two_ranks_literal(engine):
    """fwd: all-to-all 0..8, calls 5 and 7 µs (8..13, 8..15), the output's all-to-all waits for
    both (15..19.08). bwd: dout 2000 B (19.08..23.08), calls 4 and 6 µs, dq + dK/dV 6000 B
    (29.08..37.08)."""
    res = run("ulysses", 2, [[0, 5, 0], [0, 7, 0]], [[0, 4, 0], [0, 6, 0]], engine=engine)
    want = []
    for r, c, b in ((0, 5, 4), (1, 7, 6)):
        o = 1 - r
        want += [(r, "fwd", 0, "send", 0, 8, o, 6000.0), (r, "fwd", 0, "recv", 0, 8, o, 6000.0),
                 (r, "fwd", 0, "wait", 0, 8, -1, 0.0), (r, "fwd", 1, "compute", 8, 8 + c, r, 0.0),
                 (r, "fwd", 2, "send", 15, 19.08, o, 2080.0), (r, "fwd", 2, "recv", 15, 19.08, o, 2080.0),
                 (r, "fwd", 2, "wait", 8 + c, 19.08, -1, 0.0),
                 (r, "bwd", 0, "send", 19.08, 23.08, o, 2000.0), (r, "bwd", 0, "recv", 19.08, 23.08, o, 2000.0),
                 (r, "bwd", 0, "wait", 19.08, 23.08, -1, 0.0), (r, "bwd", 1, "compute", 23.08, 23.08 + b, r, 0.0),
                 (r, "bwd", 2, "send", 29.08, 37.08, o, 6000.0), (r, "bwd", 2, "recv", 29.08, 37.08, o, 6000.0),
                 (r, "bwd", 2, "wait", 23.08 + b, 37.08, -1, 0.0)]
    assert rows(res) == sorted(want)
    assert res.layer_makespan_s == pytest.approx(37.08 * US, rel=1e-12)


def test_usp_2x2_literal():
    """Groups {0, 1} and {2, 3}; member u of group 0 rings with member u of group 1 (0↔2, 1↔3).
    All-to-all 0..8; ring step 0 computes 5 µs while K/V of the group's 40 tokens on one head
    (8000 B, 10 µs) cross 8..18; ring step 1 computes 18..23; the output's all-to-all 23..27.08."""
    res = run("usp:2x2", 4, [[0, 5, 5, 0]] * 4)
    kv = res.timeline.of_kind("send")
    assert sorted(zip(kv["rank"], kv["step"], kv["peer"], kv["bytes"])) == sorted(
        [(r, 0, r ^ 1, 6000.0) for r in range(4)] + [(r, 1, r ^ 2, 8000.0) for r in range(4)]
        + [(r, 3, r ^ 1, 2080.0) for r in range(4)])
    assert res.layer_makespan_s == pytest.approx(27.08 * US, rel=1e-12)
    comp = res.timeline.of_kind("compute")
    assert sorted(zip(comp["rank"], comp["step"], comp["peer"])) == sorted(
        [(r, 1, r, ) for r in range(4)] + [(r, 2, r ^ 2) for r in range(4)])  # the K/V held: own, then the other group's
    # ring-inner: the ring runs between consecutive ranks, the all-to-all between r and r ^ 2
    inner = run("usp:2x2:ring-inner", 4, [[0, 5, 5, 0]] * 4).timeline.of_kind("send")
    assert sorted(set(zip(inner["step"], inner["rank"] ^ inner["peer"]))) == [(0, 2), (1, 1), (3, 2)]


@pytest.mark.parametrize("spec,G", [("ulysses", 8), ("usp:4x2", 8), ("usp:2x4", 8), ("usp:4x2:ring-inner", 8)])
def test_des_equals_reference(spec, G):
    wl = Workload(get_model("llama3-8b"), 64 * G)
    prog = parse_strategy(spec).build(wl, G, "causal", "fwd+bwd")
    for knobs in (Knobs(), Knobs(True, False, True)):
        assert_same_result(simulate_program(prog, wl, _nodes(G, 4), knobs=knobs, engine="des"),
                           simulate_program(prog, wl, _nodes(G, 4), knobs=knobs, engine="reference"))


def test_all_to_all_contends_and_fast_path_is_exact_only_without_it():
    wl = Workload(get_model("llama3-8b"), 64 * 8)
    sw = switch_topology(8, bw=50e9)
    big = parse_strategy("ulysses").build(wl, 8, "causal", "fwd")
    assert "two messages of one step" in inexact_reason(big.flat, sw, Knobs())
    assert simulate_program(big, wl, sw).engine == "des"
    pair = parse_strategy("usp:2x4").build(wl, 8, "causal", "fwd+bwd")  # one peer per all-to-all
    fast = simulate_program(pair, wl, sw)
    assert fast.engine == "fast"
    assert_same_result(fast, simulate_program(pair, wl, sw, engine="des"))
    # the U−1 flows out of one GPU share its uplink: the all-to-all takes its bytes through one link
    G, n = 8, 64
    res = simulate_program(big, wl, sw, cost_model=HandCost([[0, 0, 0]] * G))
    piece = (n * 4 * 128 + n * 256) * 2  # 4 query heads and the one K/V head this member uses, bf16
    assert res.arrays.step_start_s[1].max() == pytest.approx(2e-6 + 7 * piece / 50e9, rel=1e-9)


@pytest.mark.parametrize("spec", ["ulysses", "usp:4x2", "usp:2x4:ring-inner"])
def test_work_is_exact_and_shared_by_heads(spec):
    G, T = 8, 8 * 32
    wl = Workload(get_model("llama3-8b"), T)
    for mask, total in (("causal", T * (T + 1) // 2), ("full", T * T)):
        f = parse_strategy(spec).build(wl, G, mask, "fwd+bwd").flat
        for p in ("fwd", "bwd"):
            sel = [i for i, s in enumerate(f.step_phase) if s == p]
            per_rank = f.work_pairs[sel].sum(axis=0)
            assert per_rank.sum() == pytest.approx(total, rel=1e-12)
            assert np.allclose(per_rank, per_rank[0])  # balanced (zigzag over the ring's groups)


def test_bytes_and_kv_replication():
    m = get_model("llama3-8b")  # 32 query heads, 8 K/V heads
    wl = Workload(m, 32 * 64)
    assert kv_values_per_member(wl, 8) == kv_values_per_member(wl, 32) == 256  # one K/V head each
    assert kv_values_per_member(wl, 4) == 2 * 256
    for U in (4, 8, 32):
        prog = parse_strategy("ulysses").build(wl, U, "causal", "fwd+bwd")
        f = prog.flat
        n = wl.seq_len // U
        sent0 = f.bytes[(f.src == 0) & (np.array(f.step_phase)[f.post_step] == "fwd")].sum()
        q, kv = n * (32 // U) * 128 * 2, n * kv_values_per_member(wl, U) * 2
        out = n * (32 // U) * (128 * 2 + 4)
        assert sent0 == (U - 1) * (q + kv + out)
        assert prog.head_groups.degree == U and prog.meta["heads"] == 32
    # replicated: 32 ranks receive K/V heads 8 times over
    assert prog.head_groups.kv_heads_of(5, 32, 8) == range(1, 2)


def test_placement_of_groups():
    wl = Workload(get_model("llama3-8b"), 8 * 64)
    hg = parse_strategy("usp:4x2").build(wl, 8, "causal", "fwd").head_groups
    assert hg.ranks.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    hg = parse_strategy("usp:4x2:ring-inner").build(wl, 8, "causal", "fwd").head_groups
    assert hg.ranks.tolist() == [[0, 2, 4, 6], [1, 3, 5, 7]]
    # every token once; a group's tokens are the zigzag chunks of the 2-group ring
    plan = parse_strategy("usp:4x2").plan(wl, 8, "causal")
    g0 = np.sort(np.concatenate([plan.tokens(r) for r in range(4)]))
    assert g0.tolist() == list(range(128)) + list(range(384, 512))


def test_refusals_name_the_reason():
    wl = Workload(get_model("llama3-8b"), 12 * 64)
    with pytest.raises(NotApplicable, match="degree 12 does not divide the 32 query heads"):
        parse_strategy("ulysses").build(wl, 12, "causal", "fwd")
    with pytest.raises(NotApplicable, match="degree 3 does not divide"):
        parse_strategy("usp:3x4").build(wl, 12, "causal", "fwd")
    with pytest.raises(NotApplicable, match="4 × 2 = 8 ranks, but the world size is 12"):
        parse_strategy("usp:4x2").build(wl, 12, "causal", "fwd")
    odd = Workload(ModelSpec("odd", 1, 24, 8, 64), 12 * 64)
    with pytest.raises(NotApplicable, match="straddle"):
        parse_strategy("ulysses").build(odd, 12, "causal", "fwd")
    with pytest.raises(InputError, match="nearest valid lengths"):
        parse_strategy("usp:2x2").build(Workload(get_model("llama3-8b"), 102), 4, "causal", "fwd")
    with pytest.raises(InputError, match="two positive degrees"):
        parse_strategy("usp:4")
    with pytest.raises(NotApplicable, match="explicit mask"):
        parse_strategy("ulysses").build(Workload(get_model("llama3-8b"), 1 << 20), 8, "sliding:4096", "fwd")
