"""The double ring's programs: a hand-worked timeline (an outer transfer posted at a round's start
and waited at its end), the dK/dV accumulators' path, the engines against each other, refusals.

Hand-worked setup as tests/test_engine_golden.py: 4 GPUs behind one switch, links 1e9 B/s and
1 µs (b bytes: 2 µs + b/1e9 s), the toy model's 8000 B K/V per rank (10 µs alone).
"""
from __future__ import annotations

import numpy as np
import pytest

from ringsim.engines import Knobs, simulate_program
from ringsim.strategies import NotApplicable, parse_strategy
from ringsim.workload import Workload, get_model
from test_engine_golden import MODEL, HandCost, switch_topology
from test_engines import _nodes, assert_same_result

US = 1e-6


def rows(res, rank):
    df = res.timeline.df
    d = df[df["rank"] == rank]
    return sorted((int(r.step), r.kind, round(r.start_s / US, 9), round(r.end_s / US, 9), int(r.peer), float(r.bytes))
                  for r in d.itertuples())


@pytest.mark.parametrize("engine", ["des", "reference"])
def test_two_by_two_literal(engine):
    """Ranks (node, inner): 0=(0,0) 1=(0,1) 2=(1,0) 3=(1,1). Step 0 posts the inner transfer 0→1
    and the outer 0→2; both leave through rank 0's one uplink at half rate: 2 + 16 = 18 µs. The
    step waits for the inner one (compute 0..5, wait 5..18); step 1 computes the inner neighbour's
    K/V (18..23) and waits for the outer transfer (done). Round 1: the other node's K/V, inner
    transfer alone 23..33, then its last step 33..38."""
    wl = Workload(MODEL, 80, dtype="fp32")
    prog = parse_strategy("double-ring:2x2").build(wl, 4, "full", "fwd")
    res = simulate_program(prog, wl, switch_topology(4), HandCost([[5] * 4] * 4), engine=engine)
    assert rows(res, 0) == sorted([
        (0, "compute", 0, 5, 0, 0.0), (0, "send", 0, 18, 1, 8000.0), (0, "send", 0, 18, 2, 8000.0),
        (0, "recv", 0, 18, 1, 8000.0), (0, "recv", 0, 18, 2, 8000.0), (0, "wait", 5, 18, -1, 0.0),
        (1, "compute", 18, 23, 1, 0.0),
        (2, "compute", 23, 28, 2, 0.0), (2, "send", 23, 33, 1, 8000.0), (2, "recv", 23, 33, 1, 8000.0),
        (2, "wait", 28, 33, -1, 0.0),
        (3, "compute", 33, 38, 3, 0.0),
    ])
    assert res.layer_makespan_s == pytest.approx(38 * US, rel=1e-12)
    assert res.engine == engine


def _check_accumulators(prog):
    """Interpret the backward: a dK/dV message at step t carries the accumulator of the K/V its
    sender held at t − 1; the receiver must hold that K/V at t (it adds its contribution), and the
    messages of the last step (no compute) must reach the owner. Every rank sees every shard once."""
    f = prog.flat
    G = f.world_size
    bwd = [n for n in range(f.N) if f.step_phase[n] == "bwd"]
    owner = f.kv_owner
    seen = np.zeros((G, G), dtype=int)
    for n in bwd:
        if f.has_compute[n]:
            seen[np.arange(G), owner[n]] += 1
    assert np.all(seen == 1)
    dkv_steps = 0
    for st in prog.stages:
        if st.phase != "bwd":
            continue
        for g in st.messages:
            for s in range(st.n_steps):
                pay = g.payloads[s if len(g.payloads) > 1 else 0]
                if "dkv" not in pay:
                    continue
                n = bwd[0] + st.first_step + s
                src, dst = np.ravel(g.src), np.ravel(g.dst)
                carried = owner[n - 1, src]
                if f.has_compute[n]:
                    assert np.array_equal(owner[n, dst], carried), (st.name, s)
                else:
                    assert np.array_equal(dst, carried), "the return reaches the owner"
                dkv_steps += 1
    return dkv_steps


@pytest.mark.parametrize("spec,G", [("zigzag", 8), ("double-ring:2x4", 8), ("double-ring:4x2", 8),
                                    ("double-ring:3x2", 6), ("double-ring:2x3", 6)])
def test_dkv_accumulators_follow_their_shards(spec, G):
    wl = Workload(get_model("llama3-8b"), 64 * G)
    prog = parse_strategy(spec).build(wl, G, "causal", "fwd+bwd")
    assert _check_accumulators(prog) == G  # one hand-off per step after the first, and the return


@pytest.mark.parametrize("spec", ["double-ring:4x2", "double-ring:2x4"])
def test_same_work_as_the_ring_and_des_equals_reference(spec):
    G = 8
    wl = Workload(get_model("llama3-8b"), 64 * G)
    prog = parse_strategy(spec).build(wl, G, "causal", "fwd+bwd")
    ring = parse_strategy("zigzag").build(wl, G, "causal", "fwd+bwd")
    assert np.array_equal(np.sort(prog.flat.pairs.sum(axis=0)), np.sort(ring.flat.pairs.sum(axis=0)))
    assert prog.bytes_by_step()[("fwd", 0)] == 2 * G * wl.shard_bytes(64)  # inner and outer
    for knobs in (Knobs(), Knobs(False, True, True)):
        assert_same_result(simulate_program(prog, wl, _nodes(G, 4), knobs=knobs, engine="des"),
                           simulate_program(prog, wl, _nodes(G, 4), knobs=knobs, engine="reference"))
    assert simulate_program(prog, wl, _nodes(G, 4)).engine == "des"  # waited later: no fast path


def test_outer_transfer_hides_behind_the_inner_round():
    """Two nodes of 4 behind a slow uplink each (nodes = consecutive ranks): the zigzag ring's hops
    3→4 and 7→0 cross it every step, the double ring's outer transfer once per round, overlapped
    with a whole inner round — faster when the inter-node link is the bottleneck."""
    from ringsim.topology import Device, Link, Topology

    links = []

    def cable(a, b, bw):
        links.append(Link(len(links), a, b, bw, 1e-6))
        links.append(Link(len(links), b, a, bw, 1e-6))

    for nd in range(2):
        for k in range(4):
            cable(f"n{nd}g{k}", f"sw{nd}", 450e9)
        cable(f"sw{nd}", "ib", 12.5e9)
    topo = Topology("2x4", Device("h100", 989e12, 0.5, 80e9), [f"n{r // 4}g{r % 4}" for r in range(8)], links)
    wl = Workload(get_model("llama3-8b"), 8 * 4096)
    t = {s: simulate_program(parse_strategy(s).build(wl, 8, "causal", "fwd"), wl, topo).layer_makespan_s
         for s in ("zigzag", "double-ring:4x2")}
    assert t["double-ring:4x2"] < 0.8 * t["zigzag"]


def test_refusals():
    wl = Workload(get_model("llama3-8b"), 64 * 8)
    with pytest.raises(NotApplicable, match="4 × 4 = 16 ranks, but the world size is 8"):
        parse_strategy("double-ring:4x4").build(wl, 8, "causal", "fwd")
    with pytest.raises(NotApplicable, match="plain ring"):
        parse_strategy("double-ring:8x1").build(wl, 8, "causal", "fwd")
