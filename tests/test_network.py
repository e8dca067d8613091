"""The link model: max-min fair rates by hand, flows over time in the FlowNetwork, and the
FlowNetwork against the reference engine's FluidNetwork (an independent implementation) on drawn
flow sets."""
from __future__ import annotations

import math

import numpy as np
import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from ringsim.engines.loop import EventLoop
from ringsim.engines.network import FlowNetwork, max_min_rates
from ringsim.engines.reference import FluidNetwork
from ringsim.topology import Device, Link, Topology

US = 1e-6


def test_three_flows_two_links_progressive_filling():
    # link 0: 1 GB/s, link 1: 2 GB/s; flows {0}, {0, 1}, {1}.
    # all rise to 0.5 GB/s where link 0 fills (two flows); the flow alone on link 1 then takes
    # the remaining 2 - 0.5 = 1.5 GB/s.
    rates = max_min_rates([(0,), (0, 1), (1,)], [1e9, 2e9])
    assert rates.tolist() == [0.5e9, 0.5e9, 1.5e9]


def test_bottleneck_with_three_flows_on_the_small_link():
    # link 0: 10, link 1: 4; flows {0}, {0,1}, {1}, {1}: link 1 fills at 4/3 each, flow 0 gets 10 - 4/3
    rates = max_min_rates([(0,), (0, 1), (1,), (1,)], [10.0, 4.0])
    assert rates[1:] == pytest.approx([4 / 3] * 3, rel=1e-15)
    assert rates[0] == pytest.approx(10 - 4 / 3, rel=1e-15)


def test_single_flow_gets_its_bottleneck_and_empty_route_is_unlimited():
    assert max_min_rates([(2, 0, 1)], [5.0, 3.0, 7.0]).tolist() == [3.0]
    assert max_min_rates([()], [1.0]).tolist() == [math.inf]
    assert max_min_rates([], [1.0]).tolist() == []


def test_parking_lot():
    # the classic parking lot: one long flow over links 0,1,2 (cap 1 each) and one short flow per link:
    # every link has two flows, so everyone gets 0.5
    rates = max_min_rates([(0, 1, 2), (0,), (1,), (2,)], [1.0, 1.0, 1.0])
    assert rates.tolist() == [0.5, 0.5, 0.5, 0.5]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_max_min_characterisation(data):
    """Feasible, and every flow has a saturated link on which no flow gets more than it:
    the definition of a max-min fair allocation."""
    n_links = data.draw(st.integers(1, 5))
    caps = data.draw(st.lists(st.floats(0.5, 10.0), min_size=n_links, max_size=n_links))
    routes = data.draw(st.lists(st.lists(st.integers(0, n_links - 1), min_size=1, max_size=3, unique=True)
                                .map(tuple), min_size=1, max_size=6))
    rates = max_min_rates(routes, caps)
    load = np.zeros(n_links)
    for f, route in enumerate(routes):
        for l in route:
            load[l] += rates[f]
    assert np.all(load <= np.array(caps) * (1 + 1e-9))
    for f, route in enumerate(routes):
        ok = False
        for l in route:
            saturated = load[l] >= caps[l] * (1 - 1e-9)
            biggest = max(rates[g] for g, rt in enumerate(routes) if l in rt)
            if saturated and rates[f] >= biggest * (1 - 1e-9):
                ok = True
        assert ok, (routes, caps, rates)


def line_topology(bw=1e9, lat=0.0, n=3):
    """Vertices v0 … v{n-1} in a line, a full-duplex cable between neighbours."""
    links = []
    for i in range(n - 1):
        links.append(Link(len(links), f"v{i}", f"v{i + 1}", bw, lat))
        links.append(Link(len(links), f"v{i + 1}", f"v{i}", bw, lat))
    return Topology("line", Device("d", 1.0, 1.0, 1.0), [f"v{i}" for i in range(n)], links)


def run_flows(topo, flows, record=True, private=False):
    """flows: list of (start_s, route, nbytes); returns (end times, network)."""
    loop = EventLoop()
    net = FlowNetwork(loop, topo, record=record)
    ends = [None] * len(flows)

    def done(i, now):
        ends[i] = now

    for i, (t0, route, nbytes) in enumerate(flows):
        loop.at(t0, lambda a: net.start_flow(tuple(a[0]), float(a[1]), done, a[2], private=private),
                (route, nbytes, i))
    loop.run()
    return ends, net


def test_two_flows_staggered_on_one_link():
    # A: 8000 B from t=0 alone at 1e9 for 2 µs (2000 B), then shares 0.5e9 with B: 6000 B in 12 µs → 14 µs
    # B: from 2 µs, 6000 B at 0.5e9 until 14 µs, then alone 2000 B at 1e9 → 16 µs
    topo = line_topology()
    ends, net = run_flows(topo, [(0.0, (0,), 8000), (2 * US, (0,), 8000)])
    assert ends[0] == pytest.approx(14 * US, rel=1e-12)
    assert ends[1] == pytest.approx(16 * US, rel=1e-12)
    assert net.link_bytes == {0: 16000.0}
    assert net.link_busy_s[0] == pytest.approx(16 * US, rel=1e-12)
    log = [(round(t / US, 9), l, r) for t, l, r in net.rate_log]
    assert log == [(0.0, 0, 1e9), (2.0, 0, 1e9), (14.0, 0, 1e9), (16.0, 0, 0.0)]
    assert net.active_flows == 0


def test_latency_then_bottleneck():
    # two links of 1 µs each: streaming starts at 2 µs; the 1e9 and 0.5e9 links: bottleneck 0.5e9
    links = [Link(0, "a", "b", 1e9, 1e-6), Link(1, "b", "c", 0.5e9, 1e-6)]
    topo = Topology("t", Device("d", 1.0, 1.0, 1.0), ["a", "c"], links)
    ends, net = run_flows(topo, [(0.0, (0, 1), 8000)])
    assert ends[0] == pytest.approx(2 * US + 16 * US, rel=1e-12)
    assert net.link_busy_s == {0: pytest.approx(16 * US), 1: pytest.approx(16 * US)}


def test_opposite_directions_do_not_share():
    # full duplex: v0→v1 and v1→v0 are different links; both flows stream at full rate
    topo = line_topology()
    ends, _ = run_flows(topo, [(0.0, (0,), 8000), (0.0, (1,), 8000)])
    assert ends == [pytest.approx(8 * US), pytest.approx(8 * US)]


def test_three_flows_two_links_over_time():
    # links 0 (v0→v1) and 2 (v1→v2), both 1e9: flows X {0}, Y {0, 2}, Z {2}, all 6000 B from t=0:
    # every link has two flows → 0.5e9 each; all end at 12 µs
    topo = line_topology()
    ends, net = run_flows(topo, [(0.0, (0,), 6000), (0.0, (0, 2), 6000), (0.0, (2,), 6000)])
    assert ends == [pytest.approx(12 * US)] * 3
    assert all(r <= 1e9 * (1 + 1e-12) for _, _, r in net.rate_log)
    # Z has 3000 B: at 6 µs Z ends, Y then gets 0.5e9 still (link 0 shared with X) → X, Y end 12 µs
    ends, _ = run_flows(topo, [(0.0, (0,), 6000), (0.0, (0, 2), 6000), (0.0, (2,), 3000)])
    assert ends == [pytest.approx(12 * US), pytest.approx(12 * US), pytest.approx(6 * US)]
    # X has 2000 B: ends at 4 µs; Y then shares link 2 with Z: still 0.5e9 → Y, Z end 12 µs
    ends, _ = run_flows(topo, [(0.0, (0,), 2000), (0.0, (0, 2), 6000), (0.0, (2,), 6000)])
    assert ends == [pytest.approx(4 * US), pytest.approx(12 * US), pytest.approx(12 * US)]


def test_recompute_is_local_to_the_component():
    # a flow starting on link 2 must not touch link 0's flow: the rate log names only link 2
    topo = line_topology()
    loop = EventLoop()
    net = FlowNetwork(loop, topo, record=True)
    mark = {}
    loop.at(0.0, lambda _: net.start_flow((0,), 1e6, lambda *a: None, None))
    loop.at(1 * US, lambda _: mark.setdefault("n", len(net.rate_log)))
    loop.at(1 * US, lambda _: net.start_flow((2,), 1000.0, lambda *a: None, None))
    loop.at(2 * US, lambda _: mark.setdefault("m", len(net.rate_log)))
    loop.run()
    assert {l for _, l, _ in net.rate_log[mark["n"]:mark["m"]]} == {2}
    assert net.active_flows == 0


def test_zero_bytes_and_empty_route():
    topo = line_topology(lat=1e-6)
    ends, net = run_flows(topo, [(0.0, (0, 2), 0), (1 * US, (), 500)])
    assert ends == [pytest.approx(2 * US), pytest.approx(1 * US)]
    assert net.link_busy_s == {0: 0.0, 2: 0.0}


def _fluid_ends(topo, flows):
    """The same flow set in the reference engine's FluidNetwork (plain simpy, rates recomputed
    from scratch at every change): completion times and link bytes."""
    env = simpy.Environment()
    net = FluidNetwork(env, topo)
    ends = [None] * len(flows)

    def proc(i, t0, route, nbytes):
        yield env.timeout(t0)
        yield env.timeout(topo.route_latency_s(route))
        yield net.stream(tuple(route), float(nbytes))
        ends[i] = env.now

    for i, (t0, route, nbytes) in enumerate(flows):
        env.process(proc(i, t0, route, nbytes))
    env.run()
    return ends, net


@st.composite
def flow_sets(draw):
    nl = draw(st.integers(1, 6))
    links = [Link(i, f"a{i}", f"b{i}", draw(st.sampled_from([1e9, 2e9, 3e9, 7.5e9])),
                  draw(st.sampled_from([0.0, 1e-6, 1.3e-6]))) for i in range(nl)]
    topo = Topology("t", Device("d", 1.0, 1.0, 1.0), ["x"], links)
    routes = draw(st.lists(st.lists(st.integers(0, nl - 1), min_size=0, max_size=min(3, nl), unique=True),
                           min_size=1, max_size=4))
    flows = draw(st.lists(st.tuples(st.sampled_from([0.0, 0.0, 1e-6, 3e-7, 4.2e-6]), st.sampled_from(routes),
                                    st.sampled_from([0.0, 1e3, 4096.0, 5e4])), min_size=1, max_size=10))
    return topo, [(t, tuple(r), b) for t, r, b in flows]


@settings(max_examples=150, deadline=None)
@given(flow_sets())
def test_flow_network_equals_the_reference_fluid_network(case):
    """Random flow sets (shared links, staggered starts, zero bytes, empty routes): the optimised
    FlowNetwork (components, cached rates, batched timers) finishes every flow when the naive
    fluid model does, to 1e-9, and counts the same bytes per link."""
    topo, flows = case
    ends, net = run_flows(topo, flows, record=False)
    ref, fluid = _fluid_ends(topo, flows)
    for a, b in zip(ends, ref):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-18)
    assert net.link_bytes == pytest.approx(fluid.link_bytes, rel=1e-12)
    assert net.active_flows == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 5e-6), st.floats(1.0, 1e6)), min_size=1, max_size=6),
       st.sampled_from([1e9, 3e9, 7.5e9]), st.sampled_from([0.0, 1e-6, 1.3e-6]))
def test_private_flow_equals_general_path(gaps, bw, lat):
    """Sequential flows on one route (each starts after the previous one ended, after a gap):
    the one-event private path gives the same completion times, bytes and busy times, bit for bit."""
    links = [Link(0, "a", "b", bw, lat), Link(1, "b", "c", bw / 3, 2 * lat)]
    topo = Topology("line", Device("d", 1.0, 1.0, 1.0), ["a", "c"], links)
    results = []
    for private in (False, True):
        loop = EventLoop()
        net = FlowNetwork(loop, topo)
        ends = []
        todo = list(gaps)

        def start(_=None):
            if todo:
                gap, nbytes = todo.pop(0)
                loop.at(loop.now + gap, lambda _: net.start_flow((0, 1), float(nbytes), finished, None,
                                                                 private=private))

        def finished(_, now):
            ends.append(now)
            start()

        start()
        loop.run()
        results.append((ends, net.link_bytes, net.link_busy_s, net.active_flows))
    assert results[0] == results[1]
    assert results[1][3] == 0
