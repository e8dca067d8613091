"""Invariants of the ring engines over generated small topologies and workloads.

Topologies: 2–6 GPUs hanging off one or two switches (two switches joined by one cable), random
per-direction bandwidths and latencies, random rank placement — so some rings share a directed link
(the inter-switch cable crossed by several hops) and some do not. Workloads: a toy model, the
three schedules and three masks, a hand-set random cost array or the roofline model.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringsim.costs import CostModel, RooflineCost
from ringsim.engine import Knobs, ProtocolStuck, RingDES, build_problem, simulate_ring
from ringsim.schedules import Plan
from ringsim.topology import Device, Link, Topology
from ringsim.units import InputError
from ringsim.workload import ModelSpec, Workload

US = 1e-6


class ArrayCost(CostModel):
    name = "array"

    def __init__(self, fwd, bwd):
        self.fwd, self.bwd = np.asarray(fwd, float), np.asarray(bwd, float)

    def compute_s(self, batch):
        return self.fwd if batch.phase == "fwd" else self.bwd

    def scaled(self, k):
        return ArrayCost(self.fwd * k, self.bwd * k)


BWS = st.sampled_from([0.5e9, 1e9, 2e9, 3e9, 4e9])
LATS = st.sampled_from([0.0, 0.5e-6, 1e-6, 3e-6])


@st.composite
def topologies(draw, contention_free=False):
    G = draw(st.integers(2, 6))
    n_sw = 1 if contention_free and draw(st.booleans()) else draw(st.sampled_from([1, 2, 2]))
    assign = [draw(st.integers(0, n_sw - 1)) for _ in range(G)]
    links = []

    def cable(a, b):
        links.append(Link(len(links), a, b, draw(BWS), draw(LATS)))
        links.append(Link(len(links), b, a, draw(BWS), draw(LATS)))

    for g in range(G):
        cable(f"g{g}", f"s{assign[g]}")
    if n_sw == 2:
        cable("s0", "s1")
    gpus = [f"g{g}" for g in range(G)]
    if contention_free:
        gpus.sort(key=lambda g: assign[int(g[1:])])  # the ring crosses the inter-switch cable at most once each way
    else:
        gpus = draw(st.permutations(gpus))
    device = Device("toy", draw(st.sampled_from([1e9, 1e10, 1e11])), 1.0, 1e12)
    return Topology("gen", device, list(gpus), links)


@st.composite
def cases(draw, contention_free=False):
    topo = draw(topologies(contention_free))
    G = topo.num_gpus
    schedule = draw(st.sampled_from(["contiguous", "striped", "zigzag"]))
    mask = draw(st.sampled_from(["full", "causal", "sliding:5"]))
    tokens = draw(st.sampled_from([2, 4, 8]))
    model = ModelSpec("toy", 1, draw(st.sampled_from([1, 2])), 1, draw(st.sampled_from([8, 50, 64])))
    wl = Workload(model, seq_len=tokens * G, dtype="fp32")
    plan = Plan(schedule, G, tokens * G, mask)
    if draw(st.booleans()):
        vals = st.sampled_from([0.0, 1.0, 2.5, 4.0, 10.0, 20.0])
        arr = lambda: np.array([[draw(vals) for _ in range(G)] for _ in range(G)]) * US
        cost = ArrayCost(arr(), arr())
    else:
        cost = RooflineCost()
    knobs = Knobs(draw(st.booleans()), draw(st.booleans()), draw(st.booleans()))
    phase = draw(st.sampled_from(["fwd", "fwd+bwd"]))
    return plan, wl, topo, cost, phase, knobs


def assert_same_timeline(a, b, rtol=1e-9):
    da, db = a.timeline.df, b.timeline.df
    assert len(da) == len(db)
    for c in ("rank", "step", "phase", "kind", "peer", "bytes", "pairs", "flops"):
        assert da[c].tolist() == db[c].tolist(), c
    scale = max(float(da["end_s"].abs().max()), 1e-30)
    for c in ("start_s", "end_s"):
        x, y = da[c].to_numpy(), db[c].to_numpy()
        assert np.all(np.abs(x - y) <= rtol * np.maximum(np.maximum(np.abs(x), np.abs(y)), 1e-12 * scale)), c
    assert a.layer_makespan_s == pytest.approx(b.layer_makespan_s, rel=rtol)
    assert a.link_bytes.keys() == b.link_bytes.keys()
    for k in a.link_bytes:
        assert a.link_bytes[k] == pytest.approx(b.link_bytes[k], rel=1e-12)
        assert a.link_busy_s[k] == pytest.approx(b.link_busy_s[k], rel=rtol, abs=1e-15)


FAST_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST_SETTINGS
@given(cases(contention_free=True))
def test_fast_path_equals_des(case):
    plan, wl, topo, cost, phase, knobs = case
    assert not topo.ring_shares_links(plan.world_size)
    fast = simulate_ring(plan, wl, topo, cost, phase, knobs, engine="fast")
    des = simulate_ring(plan, wl, topo, cost, phase, knobs, engine="des")
    assert (fast.engine, des.engine) == ("fast", "des")
    assert simulate_ring(plan, wl, topo, cost, phase, knobs).engine == "fast"  # auto
    assert_same_timeline(fast, des)


def _rows(df, kind):
    d = df[df["kind"] == kind]
    return {(int(r.rank), r.phase, int(r.step)): r for r in d.itertuples()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_des_invariants(case):
    plan, wl, topo, cost, phase, knobs = case
    G = plan.world_size
    problem = build_problem(plan, wl, topo, cost, phase)
    des = RingDES(problem, knobs, record=True)
    des.run()
    res = simulate_ring(plan, wl, topo, cost, phase, knobs, engine="des")
    df = res.timeline.df

    # bytes sent = bytes received per (src, dst)
    sent = df[df.kind == "send"].groupby(["rank", "peer"])["bytes"].sum()
    recv = df[df.kind == "recv"].groupby(["peer", "rank"])["bytes"].sum()
    recv.index = recv.index.set_names(["rank", "peer"])
    assert sent.sort_index().to_dict() == recv.sort_index().to_dict()
    # every byte sent crossed every link of its route
    expect_link = {}
    for r in df[df.kind == "send"].itertuples():
        for lid in topo.route(r.rank, r.peer):
            expect_link[lid] = expect_link.get(lid, 0.0) + r.bytes
    assert res.link_bytes == pytest.approx(expect_link, rel=1e-12)

    # no link above its capacity at any instant (every rate change was logged)
    for _, lid, rate in des.network.rate_log:
        assert rate <= topo.links[lid].bandwidth_Bps * (1 + 1e-9)
    assert des.network.active_flows == 0

    comp, send, rcv = _rows(df, "compute"), _rows(df, "send"), _rows(df, "recv")
    phases = ["fwd"] if phase == "fwd" else ["fwd", "bwd"]
    for r in range(G):
        for p in phases:
            for s in range(G):
                c = comp[(r, p, s)]
                # no compute on a shard before it arrived
                if s >= 1:
                    assert c.start_s >= rcv[(r, p, s - 1)].end_s
                # a transfer starts only when the protocol allows it, and never beats its route
                if (r, p, s) in send:
                    x = send[(r, p, s)]
                    nxt = comp[((r + 1) % G, p, s)]
                    post = c.end_s if (not knobs.overlap or (p == "bwd" and s == G - 1)) else c.start_s
                    assert x.start_s >= post
                    if knobs.rendezvous:
                        nxt_post = nxt.end_s if (not knobs.overlap or (p == "bwd" and s == G - 1)) else nxt.start_s
                        assert x.start_s >= nxt_post
                    if not knobs.double_buffer:
                        assert x.start_s >= nxt.end_s
                    route = topo.route(r, (r + 1) % G)
                    ideal = topo.route_latency_s(route) + x.bytes / topo.route_bottleneck_Bps(route)
                    assert x.end_s - x.start_s >= ideal * (1 - 1e-9)
                # the next step starts when compute, send and receive of this step are done
                if s + 1 < G:
                    ends = [c.end_s] + ([send[(r, p, s)].end_s, rcv[(r, p, s)].end_s] if (r, p, s) in send else [])
                    assert comp[(r, p, s + 1)].start_s == max(ends)

    # makespan ≥ the busiest rank's own compute
    busy = res.timeline.per_rank_busy_s("compute")
    assert res.layer_makespan_s >= busy.max() * (1 - 1e-12)
    assert res.layer_makespan_s == res.timeline.makespan_s()

    # deterministic: byte-identical timeline
    again = simulate_ring(plan, wl, topo, cost, phase, knobs, engine="des")
    assert again.timeline.df.equals(df)
    assert json.dumps(again.timeline.to_chrome_trace()) == json.dumps(res.timeline.to_chrome_trace())
    des2 = RingDES(problem, knobs, record=True)
    des2.run()
    assert des2.network.rate_log == des.network.rate_log


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(contention_free=True), st.data())
def test_more_bandwidth_or_faster_devices_never_slower(case, data):
    """On rings without shared links the protocol is a max-plus system (only max and +), hence
    monotone: shorter durations can only move every event earlier. (With shared links, max-min
    sharing can reorder contention, so no such guarantee is claimed there.)"""
    plan, wl, topo, cost, phase, knobs = case
    base = simulate_ring(plan, wl, topo, cost, phase, knobs).layer_makespan_s
    lid = data.draw(st.integers(0, len(topo.links) - 1))
    k = data.draw(st.sampled_from([1.5, 2.0, 10.0]))
    links = list(topo.links)
    old = links[lid]
    links[lid] = Link(old.id, old.src, old.dst, old.bandwidth_Bps * k, old.latency_s)
    faster_link = topo.with_links(links)
    assert simulate_ring(plan, wl, faster_link, cost, phase, knobs).layer_makespan_s <= base * (1 + 1e-12)
    if isinstance(cost, ArrayCost):
        quicker = cost.scaled(1 / k)
        assert simulate_ring(plan, wl, topo, quicker, phase, knobs).layer_makespan_s <= base * (1 + 1e-12)
    else:
        fast_dev = topo.with_links(list(topo.links))
        fast_dev.device = Device("toy", topo.device.peak_flops * k, 1.0, 1e12)
        assert simulate_ring(plan, wl, fast_dev, cost, phase, knobs).layer_makespan_s <= base * (1 + 1e-12)


def _switch(G, bw=1e9, lat=1e-6):
    links = []
    for i in range(G):
        links.append(Link(len(links), f"g{i}", "sw", bw, lat))
        links.append(Link(len(links), "sw", f"g{i}", bw, lat))
    return Topology("sw", Device("toy", 1e10, 1.0, 1e12), [f"g{i}" for i in range(G)], links)


def test_fast_equals_des_on_larger_rings():
    """Random rings of 7–24 ranks (roll directions and long dependency chains), every knob set."""
    rng = np.random.default_rng(7)
    for i in range(12):
        G = int(rng.integers(7, 25))
        links = []
        for g in range(G):
            for a, b in ((f"g{g}", "sw"), ("sw", f"g{g}")):
                links.append(Link(len(links), a, b, float(rng.choice([1e9, 2e9, 5e9])),
                                  float(rng.choice([0.0, 1e-6, 2e-6]))))
        topo = Topology("rand", Device("toy", 1e10, 1.0, 1e12), [f"g{g}" for g in rng.permutation(G)], links)
        cost = ArrayCost(rng.exponential(5e-6, (G, G)) * (rng.random((G, G)) > 0.2),
                         rng.exponential(12e-6, (G, G)))
        plan = Plan("zigzag", G, 4 * G, "causal")
        wl = Workload(ModelSpec("toy", 1, 1, 1, 50), 4 * G, dtype="fp32")
        knobs = Knobs(bool(i & 1), bool(i & 2), bool(i & 4))
        fast = simulate_ring(plan, wl, topo, cost, "fwd+bwd", knobs, engine="fast")
        des = simulate_ring(plan, wl, topo, cost, "fwd+bwd", knobs, engine="des")
        assert_same_timeline(fast, des)


def _stuck_setup():
    G = 3
    plan = Plan("contiguous", G, 6, "full")
    wl = Workload(ModelSpec("toy", 1, 1, 1, 50), 6, dtype="fp32")
    return plan, wl, _switch(G), ArrayCost(np.full((G, G), 1e-6), np.full((G, G), 1e-6))


def test_protocol_stuck_names_ranks_and_steps(monkeypatch):
    """Rank 1 never posts its step-0 send/receive: with rendezvous, rank 0's send to 1 never
    starts, rank 1 never sends to 2, and rank 2 never receives — all stuck at fwd step 0."""
    original = RingDES.post

    def broken(self, rank, phase_index, step):
        if rank == 1 and step == 0:
            return
        original(self, rank, phase_index, step)

    monkeypatch.setattr(RingDES, "post", broken)
    plan, wl, topo, cost = _stuck_setup()
    with pytest.raises(ProtocolStuck) as err:
        simulate_ring(plan, wl, topo, cost, engine="des")
    msg = str(err.value)
    assert "rank 0 at fwd step 0 (waiting for its send to rank 1)" in msg
    assert "rank 1 at fwd step 0 (waiting for its send to rank 2)" in msg
    assert "rank 2 at fwd step 0 (waiting for its receive from rank 1)" in msg
    assert isinstance(err.value, InputError) and "\n" not in msg
    # without rendezvous rank 0's sends go out eagerly; it gets to step 1 and waits there for rank 2
    with pytest.raises(ProtocolStuck, match=r"rank 0 at fwd step 1 \(waiting for its receive from rank 2\)"):
        simulate_ring(plan, wl, topo, cost, knobs=Knobs(rendezvous=False), engine="des")


def test_unbroken_setup_finishes():
    plan, wl, topo, cost = _stuck_setup()
    res = simulate_ring(plan, wl, topo, cost, phase="fwd+bwd", engine="des")
    assert len(res.timeline.of_kind("compute")) == 2 * 3 * 3
