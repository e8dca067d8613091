"""The DES's shortcuts give bit-for-bit the results of the general mechanisms they replace.

- ``schedule_at``: an event scheduled with it lands exactly on the absolute time asked for;
- private flows (one completion event, no latency event) versus the general streaming path;
- the ring DES with and without ``record`` (recording turns the private-flow shortcut off);
- the number of simpy events per rank-step stays small on a contended, synchronised ring;
- contended rings (fwd+bwd, every knob, with and without the rate log) and random flow sets give
  bit for bit the results of the engine before its speed-ups (digests of every time).
"""
from __future__ import annotations

import itertools

import numpy as np
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from ringsim.costs import CostModel, RooflineCost
from ringsim.engine import Knobs, RingDES, build_problem
from ringsim.network import FlowNetwork, schedule_at
from ringsim.schedules import Plan
from ringsim.topology import Device, Link, Topology
from ringsim.workload import ModelSpec, Workload, get_model


def _lands_at(now, t):
    env = simpy.Environment()
    if now > 0:
        env.run(until=now)
    hit = []
    ev = simpy.Event(env)
    ev._ok, ev._value = True, None
    ev.callbacks.append(lambda e: hit.append(env.now))
    schedule_at(env, ev, t)
    env.run()
    return hit


@settings(max_examples=300, deadline=None)
@given(st.floats(1e-9, 1e3, allow_subnormal=False), st.floats(0.0, 1e3, allow_subnormal=False))
def test_schedule_at_hits_the_absolute_time(now, extra):
    t = now + extra
    assert _lands_at(now, t) == [t]


def test_schedule_at_where_no_delay_reaches_the_time():
    # now has a finer ulp than t and an odd last bit: every now + d is a rounding tie (to even),
    # so t (odd mantissa) is unreachable through a delay; schedule_at still lands on it
    now = 2.2621685648542806e-06
    t = (now + 3.9e-6) + 1e-9
    assert all(now + d != t for d in (t - now, np.nextafter(t - now, 1), np.nextafter(t - now, 0)))
    assert _lands_at(now, t) == [t]


def _line(bw, lat):
    links = [Link(0, "a", "b", bw, lat), Link(1, "b", "c", bw / 3, 2 * lat)]
    return Topology("line", Device("d", 1.0, 1.0, 1.0), ["a", "c"], links)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 5e-6), st.floats(1.0, 1e6)), min_size=1, max_size=6),
       st.sampled_from([1e9, 3e9, 7.5e9]), st.sampled_from([0.0, 1e-6, 1.3e-6]))
def test_private_flow_equals_general_path(gaps, bw, lat):
    """Sequential flows on one route (each starts after the previous one ended, after a gap):
    the one-event private path gives the same completion times, bytes and busy times, bit for bit."""
    results = []
    for private in (False, True):
        env = simpy.Environment()
        net = FlowNetwork(env, _line(bw, lat))
        ends = []

        def proc():
            for gap, nbytes in gaps:
                yield env.timeout(gap)
                done = env.event()
                net.start_flow((0, 1), float(nbytes), lambda ev, now: ev.succeed(now), done, private=private)
                ends.append((yield done))

        env.process(proc())
        env.run()
        results.append((ends, net.link_bytes, net.link_busy_s, net.active_flows))
    assert results[0] == results[1]
    assert results[1][3] == 0


class _ArrayCost(CostModel):
    name = "array"

    def __init__(self, fwd, bwd):
        self.fwd, self.bwd = fwd, bwd

    def compute_s(self, batch):
        return self.fwd if batch.phase == "fwd" else self.bwd


def _switch(G):
    links = []
    for i in range(G):
        links.append(Link(len(links), f"g{i}", "sw", 1e9 * (1 + i % 3), 1e-6))
        links.append(Link(len(links), "sw", f"g{i}", 2e9, 0.5e-6 * (i % 2)))
    return Topology("sw", Device("toy", 1e10, 1.0, 1e12), [f"g{i}" for i in range(G)], links)


def _striped(G, per_node=4):
    """Nodes of ``per_node`` GPUs behind one uplink each, ranks striped over nodes: every uplink
    carries ``per_node`` hops at once (the benchmark's contended ring, small)."""
    return _nodes(G, per_node, "striped")


def _arrays(des):
    a = des.run()
    return [x.tobytes() for x in a.step_start_s + a.compute_end_s + a.xfer_start_s + a.xfer_end_s], \
        a.link_bytes, a.link_busy_s


def test_record_on_and_off_give_identical_rings():
    """Recording the rate log turns the private-flow shortcut off; every time must be identical."""
    rng = np.random.default_rng(11)
    G = 8
    wl = Workload(ModelSpec("toy", 1, 1, 1, 50), 4 * G, dtype="fp32")
    plan = Plan("zigzag", G, 4 * G, "causal")
    cost = _ArrayCost(rng.exponential(5e-6, (G, G)) * (rng.random((G, G)) > 0.2), rng.exponential(12e-6, (G, G)))
    for topo in (_switch(G), _striped(G, 2)):
        problem = build_problem(plan, wl, topo, cost, "fwd+bwd")
        for kb in itertools.product([True, False], repeat=3):
            plain = _arrays(RingDES(problem, Knobs(*kb)))
            recorded = _arrays(RingDES(problem, Knobs(*kb), record=True))
            assert plain == recorded, (topo.name, kb)


def test_few_events_per_rank_step_on_a_contended_ring():
    """A synchronised ring whose uplinks each carry 4 hops: per rank-step one rank event, and the
    network's latency ends and completions shared by the flows of an uplink (~1.6 events in all;
    the straightforward process-per-transfer design needed about 4)."""
    G = 32
    plan = Plan("zigzag", G, 4096 * G, "causal")
    wl = Workload(get_model("llama3-8b"), 4096 * G)
    topo = _striped(G)
    assert topo.ring_shares_links(G)
    des = RingDES(build_problem(plan, wl, topo, RooflineCost(), "fwd"), Knobs())
    des.run()
    events = next(des.env._eid)  # simpy numbers every scheduled event
    assert events / (G * G) < 2.0
    assert des.network.active_flows == 0


# ---- bit-for-bit against the straightforward DES --------------------------------------------------------
# Digests of every time the DES produced on contended rings and raw flow sets, computed with the
# engine as it was before its event-count and call-count optimisations (commit 47bdd8c: process-level
# rank machine, component search over every link, one completion timer per flow starting alone).
# An optimisation that changes any bit of any time, byte count, busy time or rate-log entry, or the
# order in which links first appear, fails here.
_GOLDEN_DIGESTS = {
    "ring": "7300bff88ba6d96204f0077f830d9d1965ed1ad2feea60c37d1f2cc749a8fe2f",
    "flows": "d73a592b58b1e8a9534118d40ba95e8123cf8927681b9a6be8fa47b3f7974dee",
}


def _ring_digest() -> str:
    import hashlib

    h = hashlib.sha256()
    rng = np.random.default_rng(2024)
    for G, per_node, layout in ((8, 4, "striped"), (16, 4, "striped uneven"), (24, 8, "striped"), (16, 4, "blocked")):
        wl = Workload(ModelSpec("toy", 1, 1, 1, 50), 4 * G, dtype="fp32")
        plan = Plan("zigzag", G, 4 * G, "causal")
        topo = _nodes(G, per_node, layout)
        for jitter in (0.0, 0.5):
            base = 5e-6
            fwd = base * (1 + jitter * rng.standard_normal((G, G))).clip(0) * (rng.random((G, G)) > 0.2 * jitter)
            bwd = 2 * base * (1 + jitter * rng.random((G, G)))
            problem = build_problem(plan, wl, topo, _ArrayCost(fwd, bwd), "fwd+bwd")
            for kb in itertools.product([True, False], repeat=3):
                for record in (False, True):
                    des = RingDES(problem, Knobs(*kb), record=record)
                    a = des.run()
                    for x in a.step_start_s + a.compute_end_s + a.xfer_start_s + a.xfer_end_s:
                        h.update(np.ascontiguousarray(x).tobytes())
                    h.update(repr((list(a.link_bytes.items()), list(a.link_busy_s.items()), des.network.rate_log,
                                   list(des.network.link_bytes.items()))).encode())
    return h.hexdigest()


def _nodes(G, per_node, layout):
    """Nodes of ``per_node`` GPUs behind one uplink each. ``striped``: ranks striped over nodes;
    ``striped uneven``: with uneven NVLink and uplink bandwidths (flows that do not all freeze in
    the first round of progressive filling); ``blocked``: consecutive ranks on a node, so only the
    hop leaving each node crosses its uplinks (private flows next to shared ones)."""
    bw_mix = layout == "striped uneven"
    n_nodes = G // per_node
    links = []

    def cable(a, b, bw, lat):
        links.append(Link(len(links), a, b, bw, lat))
        links.append(Link(len(links), b, a, bw, lat))

    for n in range(n_nodes):
        for k in range(per_node):
            cable(f"n{n}g{k}", f"nsw{n}", 450e9 / (1 + k % 3) if bw_mix else 450e9, 1e-6)
        cable(f"nsw{n}", "ib", 50e9 * (1 + n % 2) if bw_mix else 50e9, 2e-6)
    if layout == "blocked":
        gpus = [f"n{r // per_node}g{r % per_node}" for r in range(G)]
    else:
        gpus = [f"n{r % n_nodes}g{r // n_nodes}" for r in range(G)]
    return Topology(f"{layout}-{G}", Device("h100", 989e12, 0.5, 80e9), gpus, links)


def _flows_digest() -> str:
    import hashlib
    import random

    h = hashlib.sha256()
    for seed in range(120):
        r = random.Random(seed)
        nl = r.randint(1, 6)
        links = [Link(i, f"a{i}", f"b{i}", r.choice([1e9, 2e9, 3e9, 7.5e9]), r.choice([0.0, 1e-6, 1.3e-6]))
                 for i in range(nl)]
        topo = Topology("t", Device("d", 1.0, 1.0, 1.0), ["x"], links)
        env = simpy.Environment()
        net = FlowNetwork(env, topo, record=bool(seed % 2))
        ends = []
        routes = [tuple(r.sample(range(nl), r.randint(0, min(3, nl)))) for _ in range(r.randint(1, 4))]

        def proc(i):
            for _ in range(r.randint(1, 6)):
                yield env.timeout(r.choice([0.0, 0.0, 1e-6, 3e-7, r.random() * 1e-5]))
                t = yield net.transfer(r.choice(routes), r.choice([0.0, 1e3, 4096.0, r.random() * 1e5]))
                ends.append((i, t))

        for i in range(r.randint(1, 5)):
            env.process(proc(i))
        env.run()
        h.update(repr((ends, list(net.link_bytes.items()), list(net.link_busy_s.items()), net.rate_log,
                       net.active_flows)).encode())
    return h.hexdigest()


def test_contended_rings_bit_for_bit_as_before():
    assert _ring_digest() == _GOLDEN_DIGESTS["ring"], "a DES optimisation changed some result bit"


def test_flow_sets_bit_for_bit_as_before():
    assert _flows_digest() == _GOLDEN_DIGESTS["flows"], "a FlowNetwork optimisation changed some result bit"
