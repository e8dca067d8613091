"""Golden timelines: tiny rings whose every interval is computed by hand.

Setup shared by all cases: G GPUs joined through one switch, every directed link 1e9 B/s and 1 µs,
so a hop crosses two links: 2 µs latency + bytes / 1e9. The model (1 layer, 1 KV head, head dim 50,
fp32) moves 400 B per token; 20 tokens per rank make an 8000 B shard: a forward transfer takes
2 + 8 = 10 µs, a backward K/V+dK/dV message (16000 B) 2 + 16 = 18 µs, the final dK/dV 10 µs.
Compute times come from a hand-set array (µs) through a tiny CostModel. Both engines must give
exactly these rows.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from ringsim.costs import CostModel
from ringsim.engine import Knobs, simulate_ring
from ringsim.schedules import Plan
from ringsim.topology import Device, Link, Topology
from ringsim.units import InputError
from ringsim.workload import ModelSpec, Workload

US = 1e-6
TOKENS_PER_RANK = 20
SHARD = 8000.0


class HandCost(CostModel):
    """Compute times set by hand: ``fwd[r][s]`` and ``bwd[r][s]`` in µs."""

    name = "hand"

    def __init__(self, fwd, bwd=None):
        self.fwd = np.asarray(fwd, dtype=float) * US
        self.bwd = None if bwd is None else np.asarray(bwd, dtype=float) * US

    def compute_s(self, batch):
        return self.fwd if batch.phase == "fwd" else self.bwd


def switch_topology(G, bw=1e9, lat=1e-6):
    links = []
    for i in range(G):
        links.append(Link(len(links), f"g{i}", "sw", bw, lat))
        links.append(Link(len(links), "sw", f"g{i}", bw, lat))
    return Topology("golden-switch", Device("toy", 1e12, 1.0, 1e9), [f"g{i}" for i in range(G)], links)


MODEL = ModelSpec("toy", layers=1, heads=1, kv_heads=1, head_dim=50)


def run(G, fwd, bwd=None, knobs=Knobs(), engine="fast", topology=None, schedule="contiguous", mask="full"):
    wl = Workload(MODEL, seq_len=TOKENS_PER_RANK * G, dtype="fp32")
    plan = Plan(schedule, G, TOKENS_PER_RANK * G, mask)
    assert wl.shard_bytes(TOKENS_PER_RANK) == SHARD
    return simulate_ring(plan, wl, topology or switch_topology(G), HandCost(fwd, bwd),
                         phase="fwd" if bwd is None else "fwd+bwd", knobs=knobs, engine=engine)


def rows_of(result):
    df = result.timeline.df
    return [(int(r.rank), int(r.step), r.phase, r.kind, r.start_s / US, r.end_s / US, int(r.peer), float(r.bytes))
            for r in df.itertuples()]


def assert_rows(got, expected):
    assert len(got) == len(expected), f"{len(got)} rows, expected {len(expected)}:\n{got}"
    for g, e in zip(got, expected):
        assert g[:4] == e[:4] and g[6:] == e[6:], (g, e)
        assert math.isclose(g[4], e[4], rel_tol=1e-12, abs_tol=1e-9) and \
            math.isclose(g[5], e[5], rel_tol=1e-12, abs_tol=1e-9), (g, e)


def rows_from_hand(G, phases):
    """Assemble rows in the engine's order (rank, phase, step; compute, send, recv, wait) from
    hand-computed numbers: per phase (name, T, E, X) with T[r] the step starts and the last
    step's end (µs), E[r] the compute ends, X[(r, s)] = (start, end, bytes) of transfer r → r+1."""
    rows = []
    for r in range(G):
        for name, T, E, X in phases:
            for s in range(G):
                rows.append((r, s, name, "compute", T[r][s], E[r][s], (r - s) % G, 0.0))
                if (r, s) in X:
                    a, b, n = X[(r, s)]
                    rows.append((r, s, name, "send", a, b, (r + 1) % G, n))
                    a, b, n = X[((r - 1) % G, s)]
                    rows.append((r, s, name, "recv", a, b, (r - 1) % G, n))
                if T[r][s + 1] > E[r][s]:
                    rows.append((r, s, name, "wait", E[r][s], T[r][s + 1], -1, 0.0))
    return rows


ENGINES = ["fast", "des"]


@pytest.mark.parametrize("engine", ENGINES)
def test_two_ranks_comm_bound_literal(engine):
    res = run(2, [[4, 4], [4, 4]], engine=engine)
    assert_rows(rows_of(res), [
        (0, 0, "fwd", "compute", 0, 4, 0, 0.0),
        (0, 0, "fwd", "send", 0, 10, 1, SHARD),
        (0, 0, "fwd", "recv", 0, 10, 1, SHARD),
        (0, 0, "fwd", "wait", 4, 10, -1, 0.0),
        (0, 1, "fwd", "compute", 10, 14, 1, 0.0),
        (1, 0, "fwd", "compute", 0, 4, 1, 0.0),
        (1, 0, "fwd", "send", 0, 10, 0, SHARD),
        (1, 0, "fwd", "recv", 0, 10, 0, SHARD),
        (1, 0, "fwd", "wait", 4, 10, -1, 0.0),
        (1, 1, "fwd", "compute", 10, 14, 0, 0.0),
    ])
    assert res.layer_makespan_s == pytest.approx(14 * US, rel=1e-12)
    assert res.engine == engine
    # each hop's two links carried one 8000 B shard, streaming 8 µs
    assert res.link_bytes == {0: SHARD, 1: SHARD, 2: SHARD, 3: SHARD}
    assert all(v == pytest.approx(8 * US, rel=1e-12) for v in res.link_busy_s.values())
    comp = res.timeline.of_kind("compute")
    assert comp["pairs"].tolist() == [400.0] * 4  # full mask: 20 × 20 pairs per block
    assert comp["flops"].tolist() == [400.0 * 4 * 50] * 4  # 4 · H · d_head per pair
    assert res.timeline.meta["engine"] == engine and res.timeline.meta["knobs"]["overlap"] is True


@pytest.mark.parametrize("engine", ENGINES)
def test_two_ranks_compute_bound(engine):
    res = run(2, [[20, 20], [20, 20]], engine=engine)
    assert_rows(rows_of(res), [
        (0, 0, "fwd", "compute", 0, 20, 0, 0.0),
        (0, 0, "fwd", "send", 0, 10, 1, SHARD),
        (0, 0, "fwd", "recv", 0, 10, 1, SHARD),
        (0, 1, "fwd", "compute", 20, 40, 1, 0.0),
        (1, 0, "fwd", "compute", 0, 20, 1, 0.0),
        (1, 0, "fwd", "send", 0, 10, 0, SHARD),
        (1, 0, "fwd", "recv", 0, 10, 0, SHARD),
        (1, 1, "fwd", "compute", 20, 40, 0, 0.0),
    ])
    assert res.layer_makespan_s == pytest.approx(40 * US, rel=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_two_ranks_fwd_bwd_comm_bound(engine):
    # fwd as above (ends 14); bwd from 14: compute 10, K/V+dK/dV 18 µs; then the final dK/dV 10 µs
    res = run(2, [[4, 4], [4, 4]], [[10, 10], [10, 10]], engine=engine)
    expected = []
    for r in range(2):
        p = 1 - r
        expected += [
            (r, 0, "fwd", "compute", 0, 4, r, 0.0),
            (r, 0, "fwd", "send", 0, 10, p, SHARD),
            (r, 0, "fwd", "recv", 0, 10, p, SHARD),
            (r, 0, "fwd", "wait", 4, 10, -1, 0.0),
            (r, 1, "fwd", "compute", 10, 14, p, 0.0),
            (r, 0, "bwd", "compute", 14, 24, r, 0.0),
            (r, 0, "bwd", "send", 14, 32, p, 2 * SHARD),
            (r, 0, "bwd", "recv", 14, 32, p, 2 * SHARD),
            (r, 0, "bwd", "wait", 24, 32, -1, 0.0),
            (r, 1, "bwd", "compute", 32, 42, p, 0.0),
            (r, 1, "bwd", "send", 42, 52, p, SHARD),
            (r, 1, "bwd", "recv", 42, 52, p, SHARD),
            (r, 1, "bwd", "wait", 42, 52, -1, 0.0),
        ]
    assert_rows(rows_of(res), expected)
    assert res.layer_makespan_s == pytest.approx(42 * US, rel=1e-12)  # last compute end, not the last send
    # each hop's links: 8000 (fwd) + 16000 + 8000 (bwd) bytes, streaming 8 + 16 + 8 µs
    assert set(res.link_bytes.values()) == {4 * SHARD}
    assert all(v == pytest.approx(32 * US, rel=1e-12) for v in res.link_busy_s.values())


@pytest.mark.parametrize("engine", ENGINES)
def test_two_ranks_fwd_bwd_compute_bound(engine):
    res = run(2, [[20, 20], [20, 20]], [[50, 50], [50, 50]], engine=engine)
    T_f, E_f = [[0, 20, 40]] * 2, [[20, 40]] * 2
    X_f = {(0, 0): (0, 10, SHARD), (1, 0): (0, 10, SHARD)}
    T_b, E_b = [[40, 90, 150]] * 2, [[90, 140]] * 2
    X_b = {(0, 0): (40, 58, 2 * SHARD), (1, 0): (40, 58, 2 * SHARD),
           (0, 1): (140, 150, SHARD), (1, 1): (140, 150, SHARD)}
    assert_rows(rows_of(res), rows_from_hand(2, [("fwd", T_f, E_f, X_f), ("bwd", T_b, E_b, X_b)]))
    assert res.layer_makespan_s == pytest.approx(140 * US, rel=1e-12)


# 4 ranks, rank 0 slow at step 1 and rank 2 slow at step 0
C4 = [[4, 12, 4, 4], [4, 4, 4, 4], [20, 4, 4, 4], [4, 4, 4, 4]]


def xfers(starts_ends, nbytes=SHARD):
    return {k: (a, b, nbytes) for k, (a, b) in starts_ends.items()}


@pytest.mark.parametrize("engine", ENGINES)
def test_four_ranks_imbalanced_default_knobs(engine):
    # step 0: all post at 0, every hop 0..10; T1 = max(E0, 10) = [10, 10, 20, 10]
    # step 1: hop r→r+1 starts at max(T1[r], T1[r+1]): 0→1 10, 1→2 20, 2→3 20, 3→0 10; E1 = [22, 14, 24, 14]
    #         T2 = [max(22,20,20), max(14,30,20), max(24,30,30), max(14,20,30)] = [22, 30, 30, 30]
    # step 2: E2 = [26, 34, 34, 34]; every hop starts at 30 (0→1: max(22,30); 3→0: max(30,22)); T3 = 40
    # step 3: compute 40..44, no transfer
    T = [[0, 10, 22, 40, 44], [0, 10, 30, 40, 44], [0, 20, 30, 40, 44], [0, 10, 30, 40, 44]]
    E = [[4, 22, 26, 44], [4, 14, 34, 44], [20, 24, 34, 44], [4, 14, 34, 44]]
    X = xfers({(0, 0): (0, 10), (1, 0): (0, 10), (2, 0): (0, 10), (3, 0): (0, 10),
               (0, 1): (10, 20), (1, 1): (20, 30), (2, 1): (20, 30), (3, 1): (10, 20),
               (0, 2): (30, 40), (1, 2): (30, 40), (2, 2): (30, 40), (3, 2): (30, 40)})
    res = run(4, C4, engine=engine)
    expected = rows_from_hand(4, [("fwd", T, E, X)])
    assert_rows(rows_of(res), expected)
    # the waits written out: rank 2 never waits at step 0, rank 0 never at step 1
    waits = [(r[0], r[1], round(r[4], 6), round(r[5], 6)) for r in rows_of(res) if r[3] == "wait"]
    assert waits == [(0, 0, 4, 10), (0, 2, 26, 40), (1, 0, 4, 10), (1, 1, 14, 30), (1, 2, 34, 40),
                     (2, 1, 24, 30), (2, 2, 34, 40), (3, 0, 4, 10), (3, 1, 14, 30), (3, 2, 34, 40)]
    assert res.layer_makespan_s == pytest.approx(44 * US, rel=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_four_ranks_rendezvous_off(engine):
    # a transfer starts when the sender posts (its step start)
    # step 1: 0→1 10..20, 1→2 10..20, 2→3 20..30, 3→0 10..20; T2 = [22, 20, 30, 30]; E2 = [26, 24, 34, 34]
    # step 2: 0→1 22..32, 1→2 20..30, 2→3 30..40, 3→0 30..40; T3 = [40, 32, 40, 40]
    T = [[0, 10, 22, 40, 44], [0, 10, 20, 32, 36], [0, 20, 30, 40, 44], [0, 10, 30, 40, 44]]
    E = [[4, 22, 26, 44], [4, 14, 24, 36], [20, 24, 34, 44], [4, 14, 34, 44]]
    X = xfers({(0, 0): (0, 10), (1, 0): (0, 10), (2, 0): (0, 10), (3, 0): (0, 10),
               (0, 1): (10, 20), (1, 1): (10, 20), (2, 1): (20, 30), (3, 1): (10, 20),
               (0, 2): (22, 32), (1, 2): (20, 30), (2, 2): (30, 40), (3, 2): (30, 40)})
    res = run(4, C4, knobs=Knobs(rendezvous=False), engine=engine)
    assert_rows(rows_of(res), rows_from_hand(4, [("fwd", T, E, X)]))
    assert res.layer_makespan_s == pytest.approx(44 * US, rel=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_four_ranks_double_buffer_off(engine):
    # the receive into r+1 waits for r+1's compute: hop r→r+1 starts at max(T[r], E[r+1])
    # step 0: 0→1 4..14, 1→2 20..30, 2→3 4..14, 3→0 4..14; T1 = [14, 30, 30, 14]; E1 = [26, 34, 34, 18]
    # step 1: 0→1 34..44, 1→2 34..44, 2→3 30..40, 3→0 26..36; T2 = [44, 44, 44, 40]; E2 = [48, 48, 48, 44]
    # step 2: 0→1 48..58, 1→2 48..58, 2→3 44..54, 3→0 48..58; T3 = 58; E3 = 62
    T = [[0, 14, 44, 58, 62], [0, 30, 44, 58, 62], [0, 30, 44, 58, 62], [0, 14, 40, 58, 62]]
    E = [[4, 26, 48, 62], [4, 34, 48, 62], [20, 34, 48, 62], [4, 18, 44, 62]]
    X = xfers({(0, 0): (4, 14), (1, 0): (20, 30), (2, 0): (4, 14), (3, 0): (4, 14),
               (0, 1): (34, 44), (1, 1): (34, 44), (2, 1): (30, 40), (3, 1): (26, 36),
               (0, 2): (48, 58), (1, 2): (48, 58), (2, 2): (44, 54), (3, 2): (48, 58)})
    res = run(4, C4, knobs=Knobs(double_buffer=False), engine=engine)
    assert_rows(rows_of(res), rows_from_hand(4, [("fwd", T, E, X)]))
    assert res.layer_makespan_s == pytest.approx(62 * US, rel=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_two_ranks_overlap_off(engine):
    # transfers posted at compute end: both ends posted at max(4, 6) = 6; 6..16; then compute 16..20
    res = run(2, [[4, 4], [6, 4]], knobs=Knobs(overlap=False), engine=engine)
    T = [[0, 16, 20], [0, 16, 20]]
    E = [[4, 20], [6, 20]]
    X = xfers({(0, 0): (6, 16), (1, 0): (6, 16)})
    assert_rows(rows_of(res), rows_from_hand(2, [("fwd", T, E, X)]))
    assert res.layer_makespan_s == pytest.approx(20 * US, rel=1e-12)
    # with overlap the same ring ends at 10 + 4 = 14
    assert run(2, [[4, 4], [6, 4]], engine=engine).layer_makespan_s == pytest.approx(14 * US, rel=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_four_ranks_compute_bound(engine):
    # compute 20 µs > transfer 10 µs: steps start every 20 µs, no waits
    res = run(4, [[20] * 4] * 4, engine=engine)
    T = [[0, 20, 40, 60, 80]] * 4
    E = [[20, 40, 60, 80]] * 4
    X = xfers({(r, s): (20 * s, 20 * s + 10) for r in range(4) for s in range(3)})
    assert_rows(rows_of(res), rows_from_hand(4, [("fwd", T, E, X)]))
    assert len(res.timeline.of_kind("wait")) == 0
    assert res.layer_makespan_s == pytest.approx(80 * US, rel=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_four_ranks_fwd_bwd_comm_bound(engine):
    # fwd: steps every 10 µs, compute 4; fwd ends 34. bwd: steps every 18 µs from 34, compute 10;
    # after the last compute (88..98) the final dK/dV 98..108.
    res = run(4, [[4] * 4] * 4, [[10] * 4] * 4, engine=engine)
    T_f, E_f = [[0, 10, 20, 30, 34]] * 4, [[4, 14, 24, 34]] * 4
    X_f = xfers({(r, s): (10 * s, 10 * s + 10) for r in range(4) for s in range(3)})
    T_b, E_b = [[34, 52, 70, 88, 108]] * 4, [[44, 62, 80, 98]] * 4
    X_b = xfers({(r, s): (34 + 18 * s, 52 + 18 * s) for r in range(4) for s in range(3)}, 2 * SHARD)
    X_b.update({(r, 3): (98, 108, SHARD) for r in range(4)})
    assert_rows(rows_of(res), rows_from_hand(4, [("fwd", T_f, E_f, X_f), ("bwd", T_b, E_b, X_b)]))
    assert res.layer_makespan_s == pytest.approx(98 * US, rel=1e-12)


def two_switch_topology():
    """a0, a1 on switch SA; b0, b1 on SB; one SA↔SB cable (1e9 B/s); GPU links 2e9 B/s; all 1 µs.
    Ranks placed a0, b0, a1, b1: hops 0→1 and 2→3 both cross SA→SB, hops 1→2 and 3→0 SB→SA."""
    links = []

    def cable(a, b, bw):
        links.append(Link(len(links), a, b, bw, 1e-6))
        links.append(Link(len(links), b, a, bw, 1e-6))

    for g, sw in (("a0", "SA"), ("a1", "SA"), ("b0", "SB"), ("b1", "SB")):
        cable(g, sw, 2e9)
    cable("SA", "SB", 1e9)
    return Topology("two-switch", Device("toy", 1e12, 1.0, 1e9), ["a0", "b0", "a1", "b1"], links)


def test_shared_link_slows_both_hops_des():
    topo = two_switch_topology()
    assert topo.ring_shares_links(4)
    # each hop: 3 links (3 µs) and two flows share the 1e9 B/s inter-switch link: 0.5e9 each,
    # 8000 B in 16 µs → 19 µs per transfer (alone it would be 3 + 8 = 11 µs)
    res = run(4, [[4] * 4] * 4, engine="auto", topology=topo)
    assert res.engine == "des"
    T = [[0, 19, 38, 57, 61]] * 4
    E = [[4, 23, 42, 61]] * 4
    X = xfers({(r, s): (19 * s, 19 * s + 19) for r in range(4) for s in range(3)})
    assert_rows(rows_of(res), rows_from_hand(4, [("fwd", T, E, X)]))
    sa_sb = 8  # link ids: 4 GPU cables (0..7), then SA→SB = 8, SB→SA = 9
    assert topo.links[sa_sb].src == "SA" and topo.links[sa_sb].dst == "SB"
    assert res.link_bytes[sa_sb] == 2 * 3 * SHARD and res.link_bytes[9] == 2 * 3 * SHARD
    assert res.link_busy_s[sa_sb] == pytest.approx(3 * 16 * US, rel=1e-12)
    # a GPU uplink carries one hop: 8000 B per step at 0.5e9 B/s
    assert res.link_busy_s[0] == pytest.approx(3 * 16 * US, rel=1e-12)
    with pytest.raises(InputError, match="exact only without shared links.*--engine des"):
        run(4, [[4] * 4] * 4, engine="fast", topology=topo)


def test_meta_and_bad_input():
    res = run(2, [[4, 4], [4, 4]])
    meta = res.timeline.meta
    for key in ("source", "engine", "schedule", "world_size", "seq_len", "mask", "phase", "workload",
                "topology", "cost_model", "knobs"):
        assert key in meta
    assert meta["source"] == "simulated" and meta["topology"] == "golden-switch"
    assert meta["cost_model"] == {"name": "hand"}
    wl = Workload(MODEL, seq_len=40, dtype="fp32")
    plan = Plan("contiguous", 2, 40, "full")
    with pytest.raises(InputError, match="phase"):
        simulate_ring(plan, wl, switch_topology(2), HandCost([[1, 1], [1, 1]]), phase="bwd")
    with pytest.raises(InputError, match="engine"):
        simulate_ring(plan, wl, switch_topology(2), HandCost([[1, 1], [1, 1]]), engine="warp")
    with pytest.raises(InputError, match="3 GPUs"):
        simulate_ring(Plan("contiguous", 4, 40, "full"), wl, switch_topology(3), HandCost([[1] * 4] * 4))
    with pytest.raises(InputError, match="shape"):
        simulate_ring(plan, wl, switch_topology(2), HandCost([[1, 1, 1]]))


@pytest.mark.parametrize("engine", ENGINES)
def test_lazy_timeline_counts_pickles_and_writes(engine, tmp_path):
    import pickle

    from ringsim.timeline import Timeline, read_timeline

    res = run(4, C4, [[10] * 4] * 4, engine=engine)
    n_lazy = len(res.timeline)  # counted without building the rows
    df = res.timeline.df
    assert n_lazy == len(df) == len(res.timeline)
    back = pickle.loads(pickle.dumps(res.timeline))
    assert type(back) is Timeline and back.df.equals(df) and back.meta == res.timeline.meta
    res.timeline.write(tmp_path / "t.json")
    assert read_timeline(tmp_path / "t.json").df[["rank", "step", "kind", "start_s"]].equals(
        df[["rank", "step", "kind", "start_s"]])
