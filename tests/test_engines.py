"""The engines against each other and against the protocol's invariants, on drawn programs.

Three independent implementations run every program: the plain simpy reference, the optimised
DES and (where it is exact) the fast recurrence. Programs are drawn two ways:

- rings (the ring strategy, three layouts, three masks, fwd and fwd+bwd, every knob) on 2–6 GPUs
  hanging off one or two switches joined by one cable, random bandwidths, latencies and
  placements — so some rings share a directed link (contended) and some do not;
- arbitrary programs: random stages whose steps post random messages between random pairs,
  several per step, some waited steps later (across stages), on random switch topologies.

The optimised DES must equal the reference to 1e-9, and the fast path the DES to 1e-9 wherever
the fast path is exact; the DES must keep bytes, link capacities, causality and determinism.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringsim.blocks import BlockPlan, CallShapes
from ringsim.costs import CostModel, RooflineCost
from ringsim.engines import Knobs, ProtocolStuck, apply_knobs, simulate_program, simulate_ring
from ringsim.engines.des import ProgramDES
from ringsim.engines.fast import inexact_reason
from ringsim.program import KernelOp, Messages, Program, Stage
from ringsim.schedules import Plan
from ringsim.topology import Device, Link, Topology
from ringsim.units import InputError
from ringsim.workload import ModelSpec, Workload, get_model

US = 1e-6


class ArrayCost(CostModel):
    """Compute seconds set per (phase, step, rank): ``fwd[r][s]``/``bwd[r][s]`` for rings, or a
    whole ``[N, G]`` table for drawn programs."""

    name = "array"

    def __init__(self, fwd=None, bwd=None, table=None):
        self.fwd = None if fwd is None else np.asarray(fwd, float)
        self.bwd = None if bwd is None else np.asarray(bwd, float)
        self.table = None if table is None else np.asarray(table, float)

    def step_seconds(self, ctx):
        f = ctx.program.flat
        if self.table is not None:
            return self.table
        out = np.zeros((f.N, f.world_size))
        for n in range(f.N):
            if f.has_compute[n]:
                out[n] = (self.fwd if f.step_phase[n] == "fwd" else self.bwd)[:, f.step_label[n]]
        return out

    def scaled(self, k):
        return ArrayCost(self.fwd * k, self.bwd * k)


BWS = st.sampled_from([0.5e9, 1e9, 2e9, 3e9, 4e9])
LATS = st.sampled_from([0.0, 0.5e-6, 1e-6, 3e-6])
WL = Workload(ModelSpec("toy", 1, 1, 1, 50), 8, dtype="fp32")


@st.composite
def topologies(draw, contention_free=False, n_gpus=None):
    G = n_gpus or draw(st.integers(2, 6))
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
def ring_cases(draw, contention_free=False):
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


_EMPTY = CallShapes([BlockPlan("empty")])


@st.composite
def programs(draw):
    """Random programs: 1–3 stages of 1–4 steps; per stage 0–2 message groups of 1–4 messages per
    step between random distinct pairs (one message per pair and step), random bytes, send/recv
    posted at the start or the compute end, some waited up to 2 steps later; random compute."""
    topo = draw(topologies(n_gpus=draw(st.integers(2, 5))))
    G = topo.num_gpus
    pairs = [(a, b) for a in range(G) for b in range(G) if a != b]
    stages = []
    n_stages = draw(st.integers(1, 3))
    lengths = [draw(st.integers(1, 4)) for _ in range(n_stages)]
    total = sum(lengths)
    n0 = 0
    for k, S in enumerate(lengths):
        groups = []
        used = [set() for _ in range(S)]
        for _ in range(draw(st.integers(0, 2))):
            C = draw(st.integers(1, 4))
            rows = []
            for s in range(S):
                free = [p for p in pairs if p not in used[s]]
                if len(free) < C:
                    break
                chosen = draw(st.lists(st.sampled_from(free), min_size=C, max_size=C, unique=True))
                used[s].update(chosen)
                rows.append(chosen)
            if len(rows) < S:
                continue
            src = np.array([[a for a, _ in row] for row in rows])
            dst = np.array([[b for _, b in row] for row in rows])
            nbytes = np.array([[draw(st.sampled_from([0.0, 1e3, 4096.0, 2e4])) for _ in range(C)] for _ in range(S)])
            wait = draw(st.integers(0, min(2, total - (n0 + S))))
            groups.append(Messages(src, dst, nbytes, (("x",),), draw(st.sampled_from(["start", "end"])),
                                   draw(st.sampled_from(["start", "end"])), wait))
        ops = (KernelOp("fwd", _EMPTY, np.zeros((S, G), dtype=np.int64)),) if draw(st.booleans()) else ()
        stages.append(Stage("fwd" if k == 0 or draw(st.booleans()) else "bwd", n0, S, ops, tuple(groups)))
        n0 += S
    # phases must not go back from bwd to fwd, and steps number within their phase
    phase, first = "fwd", {"fwd": 0, "bwd": 0}
    fixed = []
    for stg in stages:
        phase = "bwd" if phase == "bwd" or stg.phase == "bwd" else "fwd"
        fixed.append(Stage(phase, first[phase], stg.n_steps, stg.ops, stg.messages))
        first[phase] += stg.n_steps
    prog = Program(G, fixed, strategy="drawn")
    vals = st.sampled_from([0.0, 0.5, 1.0, 3.0, 10.0])
    table = np.array([[draw(vals) for _ in range(G)] for _ in range(total)]) * US
    knobs = Knobs(True, draw(st.booleans()), True)  # programs set their own post times
    return prog, topo, ArrayCost(table=table), knobs


def assert_same_result(a, b, rtol=1e-9):
    """Two runs of one program: every time to ``rtol``, rows, bytes and link figures."""
    da, db = a.timeline.df, b.timeline.df
    assert len(da) == len(db)
    for c in ("rank", "step", "phase", "kind", "peer", "bytes", "pairs", "flops"):
        assert da[c].tolist() == db[c].tolist(), c
    scale = max(float(np.abs(a.arrays.step_start_s).max()), 1e-30)
    for x, y in ((a.arrays.step_start_s, b.arrays.step_start_s), (a.arrays.compute_end_s, b.arrays.compute_end_s),
                 (a.arrays.msg_start_s, b.arrays.msg_start_s), (a.arrays.msg_end_s, b.arrays.msg_end_s)):
        assert np.all(np.abs(x - y) <= rtol * np.maximum(np.maximum(np.abs(x), np.abs(y)), 1e-3 * scale))
    assert a.layer_makespan_s == pytest.approx(b.layer_makespan_s, rel=rtol)
    assert a.link_bytes.keys() == b.link_bytes.keys()
    for k in a.link_bytes:
        assert a.link_bytes[k] == pytest.approx(b.link_bytes[k], rel=1e-12)
        assert a.link_busy_s[k] == pytest.approx(b.link_busy_s[k], rel=rtol, abs=1e-12 * scale)


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(ring_cases(), st.sampled_from(["ringsim", "ring-flash-attn"]))
def test_des_equals_reference_on_rings(case, implementation):
    """Rings of either implementation (ring-flash-attn's backward waits for dK/dV a step later)."""
    plan, wl, topo, cost, phase, knobs = case
    des = simulate_ring(plan, wl, topo, cost, phase, knobs, engine="des", implementation=implementation)
    ref = simulate_ring(plan, wl, topo, cost, phase, knobs, engine="reference", implementation=implementation)
    assert_same_result(des, ref)


@SETTINGS
@given(programs())
def test_des_equals_reference_on_drawn_programs(case):
    prog, topo, cost, knobs = case
    des = simulate_program(prog, WL, topo, cost, knobs, engine="des")
    ref = simulate_program(prog, WL, topo, cost, knobs, engine="reference")
    assert_same_result(des, ref)
    if inexact_reason(prog.flat, topo, knobs) is None:
        assert_same_result(simulate_program(prog, WL, topo, cost, knobs, engine="fast"), des)


@SETTINGS
@given(ring_cases(contention_free=True))
def test_fast_path_equals_des(case):
    plan, wl, topo, cost, phase, knobs = case
    assert not topo.ring_shares_links(plan.world_size)
    fast = simulate_ring(plan, wl, topo, cost, phase, knobs, engine="fast")
    des = simulate_ring(plan, wl, topo, cost, phase, knobs, engine="des")
    assert (fast.engine, des.engine) == ("fast", "des")
    assert simulate_ring(plan, wl, topo, cost, phase, knobs).engine == "fast"  # auto
    assert_same_result(fast, des)


def _rows(df, kind):
    d = df[df["kind"] == kind]
    out = {}
    for r in d.itertuples():
        out.setdefault((int(r.rank), r.phase, int(r.step)), []).append(r)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ring_cases())
def test_des_invariants(case):
    plan, wl, topo, cost, phase, knobs = case
    res = simulate_ring(plan, wl, topo, cost, phase, knobs, engine="des")
    df = res.timeline.df
    prog = res.program  # knobs applied
    f = prog.flat

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
    des = ProgramDES(f, res.compute_s, topo, knobs, record=True)
    arrays = des.run()
    for _, lid, rate in des.network.rate_log:
        assert rate <= topo.links[lid].bandwidth_Bps * (1 + 1e-9)
    assert des.network.active_flows == 0
    assert np.array_equal(arrays.step_start_s, res.arrays.step_start_s)  # recording changes no time

    T, E, XS, XE = res.arrays.step_start_s, res.arrays.compute_end_s, res.arrays.msg_start_s, res.arrays.msg_end_s
    for m in range(f.M):
        n, s, d = int(f.post_step[m]), int(f.src[m]), int(f.dst[m])
        post_s = E[n, s] if f.send_end[m] else T[n, s]
        post_r = E[n, d] if f.recv_end[m] else T[n, d]
        # a message starts when the protocol allows it, and never beats its route
        assert XS[m] >= post_s
        if knobs.rendezvous or f.recv_end[m]:
            assert XS[m] >= post_r
        route = topo.route(s, d)
        ideal = topo.route_latency_s(route) + f.bytes[m] / topo.route_bottleneck_Bps(route)
        assert XE[m] - XS[m] >= ideal * (1 - 1e-9)
        # no compute on a shard before it arrived: both ends finish the step only after it
        w = int(f.wait_step[m])
        assert T[w + 1, s] >= XE[m] and T[w + 1, d] >= XE[m]
    # the next step starts exactly when the compute and the awaited messages are done
    for n in range(f.N):
        for r in range(f.world_size):
            ends = [E[n, r]] + [XE[m] for m in range(f.M) if f.wait_step[m] == n and r in (f.src[m], f.dst[m])]
            assert T[n + 1, r] == max(ends)

    # makespan ≥ the busiest rank's own compute; = the timeline's end
    busy = res.timeline.per_rank_busy_s("compute")
    assert res.layer_makespan_s >= busy.max() * (1 - 1e-12)
    assert res.layer_makespan_s == res.timeline.makespan_s()

    # deterministic: byte-identical timeline
    again = simulate_ring(plan, wl, topo, cost, phase, knobs, engine="des")
    assert again.timeline.df.equals(df)
    assert json.dumps(again.timeline.to_chrome_trace()) == json.dumps(res.timeline.to_chrome_trace())
    des2 = ProgramDES(f, res.compute_s, topo, knobs, record=True)
    des2.run()
    assert des2.network.rate_log == des.network.rate_log


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ring_cases(contention_free=True), st.data())
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
        assert_same_result(fast, des)


def _nodes(G, per_node):
    """Nodes of ``per_node`` GPUs behind one uplink each, ranks striped over nodes: every uplink
    carries ``per_node`` hops at once (the benchmark's contended ring, small)."""
    n_nodes = G // per_node
    links = []

    def cable(a, b, bw, lat):
        links.append(Link(len(links), a, b, bw, lat))
        links.append(Link(len(links), b, a, bw, lat))

    for n in range(n_nodes):
        for k in range(per_node):
            cable(f"n{n}g{k}", f"nsw{n}", 450e9, 1e-6)
        cable(f"nsw{n}", "ib", 50e9, 2e-6)
    return Topology(f"striped-{G}", Device("h100", 989e12, 0.5, 80e9),
                    [f"n{r % n_nodes}g{r // n_nodes}" for r in range(G)], links)


def test_contended_ring_des_equals_reference_every_knob():
    """The benchmark's contended shape, small: 16 ranks, 4 hops per uplink, fwd+bwd, every knob."""
    G = 16
    plan = Plan("zigzag", G, 64 * G, "causal")
    wl = Workload(get_model("llama3-8b"), 64 * G)
    topo = _nodes(G, 4)
    assert topo.ring_shares_links(G)
    for overlap in (True, False):
        for rv in (True, False):
            for db in (True, False):
                k = Knobs(overlap, rv, db)
                assert_same_result(simulate_ring(plan, wl, topo, phase="fwd+bwd", knobs=k, engine="des"),
                                   simulate_ring(plan, wl, topo, phase="fwd+bwd", knobs=k, engine="reference"))


def test_few_events_per_rank_step_on_a_contended_ring():
    """A synchronised ring whose uplinks each carry 4 hops: per rank-step one rank wake-up, and the
    network's latency ends and completions shared by the flows of an uplink (about 1.6 events in
    all; a process per transfer needed about 4)."""
    G = 32
    plan = Plan("zigzag", G, 4096 * G, "causal")
    wl = Workload(get_model("llama3-8b"), 4096 * G)
    topo = _nodes(G, 4)
    res = simulate_ring(plan, wl, topo, engine="des")
    des = ProgramDES(res.program.flat, res.compute_s, topo, Knobs())
    des.run()
    events = next(des.loop.seq)  # every scheduled entry took a number
    assert events / (G * G) < 2.0
    assert des.network.active_flows == 0


def _broken(prog, topo, cost, knobs, wl, rank=1, step=0):
    """A DES in which ``rank`` never posts its messages of ``step`` (an engine bug, for the
    stuck-program report): their needs are raised by the sides that rank would have posted."""
    from ringsim.costs import CostContext

    flat = prog.flat
    des = ProgramDES(flat, cost.step_seconds(CostContext(prog, wl, topo)), topo, knobs)
    for m in range(flat.M):
        if int(flat.post_step[m]) != step:
            continue
        if int(flat.src[m]) == rank:
            des._need[m] += 1
        if int(flat.dst[m]) == rank and (knobs.rendezvous or flat.recv_end[m]):
            des._need[m] += 1
    return des


def _switch(G, bw=1e9, lat=1e-6):
    links = []
    for i in range(G):
        links.append(Link(len(links), f"g{i}", "sw", bw, lat))
        links.append(Link(len(links), "sw", f"g{i}", bw, lat))
    return Topology("sw", Device("toy", 1e10, 1.0, 1e12), [f"g{i}" for i in range(G)], links)


def test_protocol_stuck_names_ranks_and_steps():
    """Rank 1 never posts its step-0 messages: with rendezvous, rank 0's send to 1 never starts,
    rank 1 never sends to 2, and rank 2 never receives — all stuck at fwd step 0."""
    from ringsim.strategies import build_ring

    G = 3
    wl = Workload(ModelSpec("toy", 1, 1, 1, 50), 6, dtype="fp32")
    prog = build_ring(Plan("contiguous", G, 6, "full"), wl, "fwd")
    cost = ArrayCost(np.full((G, G), 1e-6), np.full((G, G), 1e-6))
    with pytest.raises(ProtocolStuck) as err:
        _broken(prog, _switch(G), cost, Knobs(), wl).run()
    msg = str(err.value)
    assert "rank 0 at fwd step 0 (waiting for its send to rank 1)" in msg
    assert "rank 1 at fwd step 0 (waiting for its send to rank 2, its receive from rank 0)" in msg
    assert "rank 2 at fwd step 0 (waiting for its receive from rank 1)" in msg
    assert isinstance(err.value, InputError) and "\n" not in msg
    # without rendezvous rank 0's sends go out eagerly; it gets to step 1 and waits there for rank 2
    with pytest.raises(ProtocolStuck, match=r"rank 0 at fwd step 1 \(waiting for its receive from rank 2\)"):
        _broken(prog, _switch(G), cost, Knobs(rendezvous=False), wl).run()
    # the unbroken program finishes
    res = simulate_ring(Plan("contiguous", G, 6, "full"), wl, _switch(G), cost, phase="fwd+bwd", engine="des")
    assert len(res.timeline.of_kind("compute")) == 2 * 3 * 3


def test_knobs_move_posts_and_fast_path_refuses_contention():
    wl = Workload(ModelSpec("toy", 1, 1, 1, 50), 8, dtype="fp32")
    from ringsim.strategies import build_ring

    prog = build_ring(Plan("zigzag", 2, 8, "causal"), wl, "fwd+bwd")
    assert apply_knobs(prog, Knobs()) is prog
    late = apply_knobs(prog, Knobs(overlap=False))
    assert all(g.send_at == g.recv_at == "end" for st in late.stages for g in st.messages)
    single = apply_knobs(prog, Knobs(double_buffer=False))
    assert all(g.send_at == "start" and g.recv_at == "end" for st in single.stages for g in st.messages)
    topo = _nodes(8, 4)
    with pytest.raises(InputError, match="--engine des"):
        simulate_ring(Plan("zigzag", 8, 64, "causal"), Workload(get_model("llama3-8b"), 64), topo, engine="fast")


# ---- the compiled core of the DES against the Python DES ---------------------------------------------------

def _both_cores(prog, topo, cost, knobs, wl):
    """The same flat program through the compiled DES and the Python DES."""
    from ringsim.costs import CostContext
    from ringsim.engines.des import run_des

    p = apply_knobs(prog, knobs)
    compute = cost.step_seconds(CostContext(p, wl, topo))
    return run_des(p.flat, compute, topo, knobs), ProgramDES(p.flat, compute, topo, knobs).run()


def _assert_same_arrays(a, b, rtol=1e-12):
    for x, y in ((a.step_start_s, b.step_start_s), (a.compute_end_s, b.compute_end_s),
                 (a.msg_start_s, b.msg_start_s), (a.msg_end_s, b.msg_end_s)):
        assert x.shape == y.shape
        assert np.allclose(x, y, rtol=rtol, atol=0.0, equal_nan=True)
    assert a.link_bytes.keys() == b.link_bytes.keys() == a.link_busy_s.keys()
    for k in a.link_bytes:
        assert a.link_bytes[k] == pytest.approx(b.link_bytes[k], rel=1e-12)
        assert a.link_busy_s[k] == pytest.approx(b.link_busy_s[k], rel=rtol, abs=1e-18)


def _need_core():
    from ringsim.engines.des import compiled_core

    if compiled_core() is None:
        pytest.skip("the compiled DES core is not built here (or RINGSIM_PURE_PYTHON is set)")


@SETTINGS
@given(programs())
def test_compiled_core_equals_python_des_on_drawn_programs(case):
    _need_core()
    prog, topo, cost, knobs = case
    _assert_same_arrays(*_both_cores(prog, topo, cost, knobs, WL))


@SETTINGS
@given(ring_cases())
def test_compiled_core_equals_python_des_on_rings(case):
    _need_core()
    plan, wl, topo, cost, phase, knobs = case
    from ringsim.strategies import build_ring

    _assert_same_arrays(*_both_cores(build_ring(plan, wl, phase), topo, cost, knobs, wl))


def test_compiled_core_on_the_contended_benchmark_ring():
    """The benchmark's contended ring (64 ranks, 8 flows per uplink, fwd+bwd), every knob: the two
    DES implementations agree to 1e-12, and simulate_program's des engine is the compiled one."""
    _need_core()
    from ringsim.engines.des import compiled_core

    G = 64
    plan = Plan("zigzag", G, 256 * G, "causal")
    wl = Workload(get_model("llama3-8b"), 256 * G)
    topo = _nodes(G, 8)
    from ringsim.strategies import build_ring

    prog = build_ring(plan, wl, "fwd+bwd")
    for i in range(8):
        knobs = Knobs(bool(i & 1), bool(i & 2), bool(i & 4))
        a, b = _both_cores(prog, topo, RooflineCost(), knobs, wl)
        _assert_same_arrays(a, b)
    assert compiled_core() is not None


def test_pure_python_switch(monkeypatch):
    from ringsim.engines.des import compiled_core

    monkeypatch.setenv("RINGSIM_PURE_PYTHON", "1")
    assert compiled_core() is None
    G = 8
    plan = Plan("zigzag", G, 64 * G, "causal")
    wl = Workload(get_model("llama3-8b"), 64 * G)
    res = simulate_ring(plan, wl, _nodes(G, 4), phase="fwd+bwd", engine="des")
    assert res.engine == "des" and res.layer_makespan_s > 0


def test_two_messages_between_the_same_ranks_in_a_step_are_left_to_the_des():
    """ring-flash-attn's backward posts K/V at a step's start and dK/dV at its end to the same
    neighbour: the recurrence cannot tell the two apart; the flag is checked against every message."""
    from ringsim.engines.fast import inexact_reason
    from ringsim.strategies import build_ring as ring
    from ringsim.topoload import load_topology

    wl = Workload(get_model("llama3-8b"), 4096)
    plan = Plan("zigzag", 4, 4096, "causal")
    topo = load_topology("dgx-h100-8")
    for impl, phase, dup in (("ringsim", "fwd+bwd", False), ("ring-flash-attn", "fwd", False),
                             ("ring-flash-attn", "fwd+bwd", True)):
        flat = ring(plan, wl, phase, impl).flat
        assert flat.duplicate_hops is dup, (impl, phase)
        # the flag agrees with a brute-force look at every message
        key = flat.post_step * len(flat.hop_src) + flat.hop
        assert (len(set(key.tolist())) < flat.M) is dup
        reason = inexact_reason(flat, topo, Knobs())  # (its backward also waits for dK/dV a step later)
        assert (reason is not None) is dup, reason


@SETTINGS
@given(programs())
def test_compiled_recurrence_equals_the_python_one(case):
    """The fast path's recurrence in C (_cdes.c) and in Python (RINGSIM_PURE_PYTHON=1) on drawn
    programs: the same step starts, compute ends and message times to 1e-12."""
    import os

    from ringsim.engines.des import compiled_core
    from ringsim.engines.fast import run_fast

    if compiled_core() is None:
        pytest.skip("the compiled core is not built")
    prog, topo, cost, knobs = case
    prog = apply_knobs(prog, knobs)
    from ringsim.costs import CostContext

    comp = cost.step_seconds(CostContext(prog, WL, topo))
    c = run_fast(prog.flat, comp, topo, knobs)
    old = os.environ.get("RINGSIM_PURE_PYTHON")
    os.environ["RINGSIM_PURE_PYTHON"] = "1"
    try:
        p = run_fast(prog.flat, comp, topo, knobs)
    finally:
        if old is None:
            del os.environ["RINGSIM_PURE_PYTHON"]
        else:
            os.environ["RINGSIM_PURE_PYTHON"] = old
    for a, b in ((c.step_start_s, p.step_start_s), (c.compute_end_s, p.compute_end_s), (c.msg_start_s, p.msg_start_s),
                 (c.msg_end_s, p.msg_end_s)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert c.link_bytes == p.link_bytes
