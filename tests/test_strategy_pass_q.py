"""Prefill with a cached prefix: pass-KV and pass-Q programs — hand-worked timelines, exact work,
the bytes that make pass-Q win with few new tokens, the engines against each other, refusals.

Hand-worked setup as tests/test_engine_golden.py (2 GPUs, one switch, 1e9 B/s and 1 µs links:
b bytes take 2 µs + b/1e9 s); toy model fp32, 1 head, head dim 50: queries 200 B per token, K/V
400 B per token; 40 cached tokens (20 per rank) and 8 new tokens (4 per rank, zigzag).
"""
from __future__ import annotations

import numpy as np
import pytest

from ringsim.engines import simulate_program
from ringsim.strategies import NotApplicable, parse_strategy
from ringsim.units import InputError
from ringsim.workload import Workload, get_model
from test_engine_golden import MODEL, HandCost, switch_topology
from test_engines import _nodes, assert_same_result

US = 1e-6


def run(spec, fwd, engine="des"):
    wl = Workload(MODEL, 48, dtype="fp32")
    prog = parse_strategy(spec).build(wl, 2, "causal", "fwd")
    return simulate_program(prog, wl, switch_topology(2), HandCost(fwd), engine=engine)


@pytest.mark.parametrize("engine", ["des", "reference"])
def test_pass_q_two_ranks_literal(engine):
    """Queries of 4 tokens (800 B, 2.8 µs) cross while step 0 computes 3 µs; step 1 3..6; the
    partial outputs (4 tokens × (50·4 + 4) B = 816 B, 2.816 µs) go home 6..8.816; merge 1 µs."""
    res = run("pass-q:40", [[3, 3, 0, 1]] * 2, engine)
    got = sorted((int(r.rank), int(r.step), r.kind, round(r.start_s / US, 9), round(r.end_s / US, 9), int(r.peer),
                  float(r.bytes)) for r in res.timeline.df.itertuples() if r.rank == 0)
    assert got == sorted([
        (0, 0, "compute", 0, 3, -1, 0.0), (0, 0, "send", 0, 2.8, 1, 800.0), (0, 0, "recv", 0, 2.8, 1, 800.0),
        (0, 1, "compute", 3, 6, -1, 0.0),
        (0, 2, "send", 6, 8.816, 1, 816.0), (0, 2, "recv", 6, 8.816, 1, 816.0), (0, 2, "wait", 6, 8.816, -1, 0.0),
        (0, 3, "compute", 8.816, 9.816, -1, 0.0),
    ])
    assert res.layer_makespan_s == pytest.approx(9.816 * US, rel=1e-12)


@pytest.mark.parametrize("engine", ["fast", "des", "reference"])
def test_pass_kv_two_ranks_literal(engine):
    """K/V of 24 tokens (9600 B, 11.6 µs) cross while step 0 computes 3 µs; step 1 11.6..14.6."""
    res = run("pass-kv:40", [[3, 3]] * 2, engine)
    assert res.layer_makespan_s == pytest.approx(14.6 * US, rel=1e-12)
    assert res.timeline.of_kind("send")["bytes"].tolist() == [9600.0, 9600.0]


@pytest.mark.parametrize("spec", ["pass-kv", "pass-q"])
def test_work_is_exact_and_balanced(spec):
    G, P, N = 4, 4 * 96, 8 * 16
    wl = Workload(get_model("llama3-70b"), P + N)
    for mask, total in (("causal", N * P + N * (N + 1) // 2), ("full", N * (P + N))):
        f = parse_strategy(spec, cached_tokens=P).build(wl, G, mask, "fwd").flat
        per_rank = f.work_pairs.sum(axis=0)
        assert per_rank.sum() == total
        assert np.all(per_rank == per_rank[0])


def test_pass_q_sends_fewer_bytes_only_when_few_new_tokens_meet_a_long_cache():
    """llama3-70b: 16 KiB of queries against 4 KiB of K/V per token; pass-Q's ring sends N/G
    tokens' queries per step, pass-KV (P + N)/G tokens' K/V, so pass-Q moves fewer bytes iff
    4·N < P + N (plus its all-to-all of partial outputs)."""
    G, T = 8, 8 * 1024
    wl = Workload(get_model("llama3-70b"), T)
    topo = _nodes(G, 4)
    for P, q_wins in ((T - 8 * 32, True), (0, False)):
        ring_bytes = {}
        times = {}
        for spec in ("pass-q", "pass-kv"):
            prog = parse_strategy(spec, cached_tokens=P).build(wl, G, "causal", "fwd")
            ring_bytes[spec] = prog.bytes_by_step()[("fwd", 0)]
            times[spec] = simulate_program(prog, wl, topo).layer_makespan_s
        assert (ring_bytes["pass-q"] < ring_bytes["pass-kv"]) == q_wins
        assert (times["pass-q"] < times["pass-kv"]) == q_wins, (P, times)


@pytest.mark.parametrize("spec", ["pass-kv:512", "pass-q:512"])
def test_des_equals_reference(spec):
    G = 8
    wl = Workload(get_model("llama3-8b"), 512 + 8 * 16)
    prog = parse_strategy(spec).build(wl, G, "causal", "fwd")
    assert_same_result(simulate_program(prog, wl, _nodes(G, 4), engine="des"),
                       simulate_program(prog, wl, _nodes(G, 4), engine="reference"))


def test_refusals_and_spec():
    wl = Workload(get_model("llama3-8b"), 1024)
    assert parse_strategy("pass-q", cached_tokens=512).spec == "pass-q:512"
    assert parse_strategy("pass-kv:1K").spec == "pass-kv:1024"
    with pytest.raises(InputError, match="--cached-tokens"):
        parse_strategy("pass-q")
    with pytest.raises(NotApplicable, match="forward only"):
        parse_strategy("pass-q:512").build(wl, 4, "causal", "fwd+bwd")
    with pytest.raises(InputError, match="do not split over 3 ranks"):
        parse_strategy("pass-q:512").build(wl, 3, "causal", "fwd")
    with pytest.raises(InputError, match="nearest valid sequence lengths: 1024 or 1040"):
        parse_strategy("pass-kv:512").build(Workload(get_model("llama3-8b"), 1030), 8, "causal", "fwd")
    with pytest.raises(InputError, match="less than the sequence length"):
        parse_strategy("pass-q:1024").build(wl, 4, "causal", "fwd")
