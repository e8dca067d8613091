"""Golden timelines: tiny rings whose every interval is computed by hand.

Setup shared by all cases: G GPUs joined through one switch, every directed link 1e9 B/s and 1 µs,
so a hop crosses two links: 2 µs latency + bytes / 1e9. The model (1 layer, 1 KV head, head dim 50,
fp32) moves 400 B per token; 20 tokens per rank make an 8000 B shard: a forward transfer takes
2 + 8 = 10 µs. Backward (the runtime's protocol, dK/dV fp32 = 8000 B here): step 0 sends K/V
(10 µs), steps 1 … G−2 K/V + dK/dV (16000 B, 18 µs), step G−1 dK/dV (10 µs), and a return step G
without compute sends every shard's dK/dV home (10 µs). Compute times come from a hand-set array
(µs) through a tiny CostModel. All three engines must give exactly these rows.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from ringsim.costs import CostModel
from ringsim.engines import Knobs, simulate_ring
from ringsim.schedules import Plan
from ringsim.topology import Device, Link, Topology
from ringsim.units import InputError
from ringsim.workload import ModelSpec, Workload

US = 1e-6
TOKENS_PER_RANK = 20
SHARD = 8000.0


class HandCost(CostModel):
    """Compute times set by hand: ``fwd[r][s]`` and ``bwd[r][s]`` in µs (steps without compute: 0)."""

    name = "hand"

    def __init__(self, fwd, bwd=None):
        self.fwd = np.asarray(fwd, dtype=float) * US
        self.bwd = None if bwd is None else np.asarray(bwd, dtype=float) * US

    def step_seconds(self, ctx):
        f = ctx.program.flat
        out = np.zeros((f.N, f.world_size))
        for n in range(f.N):
            if f.has_compute[n]:
                out[n] = (self.fwd if f.step_phase[n] == "fwd" else self.bwd)[:, f.step_label[n]]
        return out


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


def strategy_rows(res):
    """Every timeline row of a strategy's hand-worked run as (rank, phase, step, kind, start µs,
    end µs, peer, bytes), sorted (times rounded to 1e-9 µs)."""
    return sorted((int(r.rank), r.phase, int(r.step), r.kind, round(r.start_s / US, 9), round(r.end_s / US, 9),
                   int(r.peer), float(r.bytes)) for r in res.timeline.df.itertuples())


def run_strategy(spec, wl, G, fwd, bwd=None, engine="des"):
    """A strategy's program on ``wl`` over G GPUs behind one switch, compute times by hand
    (causal; fwd+bwd when ``bwd`` is given)."""
    from ringsim.engines import simulate_program
    from ringsim.strategies import parse_strategy

    prog = parse_strategy(spec).build(wl, G, "causal", "fwd" if bwd is None else "fwd+bwd")
    return simulate_program(prog, wl, switch_topology(G), HandCost(fwd, bwd), engine=engine)


def assert_rows(got, expected):
    assert len(got) == len(expected), f"{len(got)} rows, expected {len(expected)}:\n{got}"
    for g, e in zip(got, expected):
        assert g[:4] == e[:4] and g[6:] == e[6:], (g, e)
        assert math.isclose(g[4], e[4], rel_tol=1e-12, abs_tol=1e-9) and \
            math.isclose(g[5], e[5], rel_tol=1e-12, abs_tol=1e-9), (g, e)


def rows_from_hand(G, phases):
    """Assemble rows in the engine's order (rank, phase, step; compute, send, recv, wait) from
    hand-computed numbers: per phase (name, T, E, X) with T[r] the step starts and the last
    step's end (µs), E[r] the compute ends (None: a step without compute, as the backward's
    return), X[(r, s)] = (start, end, bytes) of transfer r → r+1."""
    rows = []
    for r in range(G):
        for name, T, E, X in phases:
            for s in range(len(T[r]) - 1):
                e = E[r][s] if s < len(E[r]) else None
                if e is not None:
                    rows.append((r, s, name, "compute", T[r][s], e, (r - s) % G, 0.0))
                if (r, s) in X:
                    a, b, n = X[(r, s)]
                    rows.append((r, s, name, "send", a, b, (r + 1) % G, n))
                    a, b, n = X[((r - 1) % G, s)]
                    rows.append((r, s, name, "recv", a, b, (r - 1) % G, n))
                if T[r][s + 1] > (e if e is not None else T[r][s]):
                    rows.append((r, s, name, "wait", e if e is not None else T[r][s], T[r][s + 1], -1, 0.0))
    return rows


ENGINES = ["fast", "des", "reference"]


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
    # fwd as above (ends 14); bwd from 14: compute 6; K/V 14..24, dK/dV of step 0 24..34, the
    # return of dK/dV to its owner 34..44 (no compute at that step: a wait)
    res = run(2, [[4, 4], [4, 4]], [[6, 6], [6, 6]], engine=engine)
    expected = []
    for r in range(2):
        p = 1 - r
        expected += [
            (r, 0, "fwd", "compute", 0, 4, r, 0.0),
            (r, 0, "fwd", "send", 0, 10, p, SHARD),
            (r, 0, "fwd", "recv", 0, 10, p, SHARD),
            (r, 0, "fwd", "wait", 4, 10, -1, 0.0),
            (r, 1, "fwd", "compute", 10, 14, p, 0.0),
            (r, 0, "bwd", "compute", 14, 20, r, 0.0),
            (r, 0, "bwd", "send", 14, 24, p, SHARD),
            (r, 0, "bwd", "recv", 14, 24, p, SHARD),
            (r, 0, "bwd", "wait", 20, 24, -1, 0.0),
            (r, 1, "bwd", "compute", 24, 30, p, 0.0),
            (r, 1, "bwd", "send", 24, 34, p, SHARD),
            (r, 1, "bwd", "recv", 24, 34, p, SHARD),
            (r, 1, "bwd", "wait", 30, 34, -1, 0.0),
            (r, 2, "bwd", "send", 34, 44, p, SHARD),
            (r, 2, "bwd", "recv", 34, 44, p, SHARD),
            (r, 2, "bwd", "wait", 34, 44, -1, 0.0),
        ]
    assert_rows(rows_of(res), expected)
    assert res.layer_makespan_s == pytest.approx(44 * US, rel=1e-12)  # the dK/dV are home at 44
    # each hop's links: 8000 (fwd) + 8000 + 8000 + 8000 (bwd) bytes, streaming 8 µs each
    assert set(res.link_bytes.values()) == {4 * SHARD}
    assert all(v == pytest.approx(32 * US, rel=1e-12) for v in res.link_busy_s.values())
    # bytes per (phase, step), summed over ranks: what `ringsim run` sends
    assert res.program.bytes_by_step() == {("fwd", 0): 2 * SHARD, ("bwd", 0): 2 * SHARD, ("bwd", 1): 2 * SHARD,
                                           ("bwd", 2): 2 * SHARD}


@pytest.mark.parametrize("engine", ENGINES)
def test_two_ranks_fwd_bwd_compute_bound(engine):
    res = run(2, [[20, 20], [20, 20]], [[50, 50], [50, 50]], engine=engine)
    T_f, E_f = [[0, 20, 40]] * 2, [[20, 40]] * 2
    X_f = {(0, 0): (0, 10, SHARD), (1, 0): (0, 10, SHARD)}
    T_b, E_b = [[40, 90, 140, 150]] * 2, [[90, 140, None]] * 2
    X_b = {(0, 0): (40, 50, SHARD), (1, 0): (40, 50, SHARD),
           (0, 1): (90, 100, SHARD), (1, 1): (90, 100, SHARD),
           (0, 2): (140, 150, SHARD), (1, 2): (140, 150, SHARD)}
    assert_rows(rows_of(res), rows_from_hand(2, [("fwd", T_f, E_f, X_f), ("bwd", T_b, E_b, X_b)]))
    assert res.layer_makespan_s == pytest.approx(150 * US, rel=1e-12)


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
    # fwd: steps every 10 µs, compute 4; fwd ends 34. bwd from 34, compute 9: step 0 K/V 34..44;
    # steps 1, 2 K/V + dK/dV (18 µs) 44..62, 62..80; step 3 dK/dV 80..90; the return 90..100.
    res = run(4, [[4] * 4] * 4, [[9] * 4] * 4, engine=engine)
    T_f, E_f = [[0, 10, 20, 30, 34]] * 4, [[4, 14, 24, 34]] * 4
    X_f = xfers({(r, s): (10 * s, 10 * s + 10) for r in range(4) for s in range(3)})
    T_b, E_b = [[34, 44, 62, 80, 90, 100]] * 4, [[43, 53, 71, 89, None]] * 4
    X_b = xfers({(r, 0): (34, 44) for r in range(4)})
    X_b.update(xfers({(r, s): (26 + 18 * s, 44 + 18 * s) for r in range(4) for s in (1, 2)}, 2 * SHARD))
    X_b.update(xfers({(r, 3): (80, 90) for r in range(4)}))
    X_b.update(xfers({(r, 4): (90, 100) for r in range(4)}))
    assert_rows(rows_of(res), rows_from_hand(4, [("fwd", T_f, E_f, X_f), ("bwd", T_b, E_b, X_b)]))
    assert res.layer_makespan_s == pytest.approx(100 * US, rel=1e-12)


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
    with pytest.raises(InputError, match="exact only when no two messages share a link.*--engine des"):
        run(4, [[4] * 4] * 4, engine="fast", topology=topo)


def test_meta_and_bad_input():
    res = run(2, [[4, 4], [4, 4]])
    meta = res.timeline.meta
    for key in ("source", "engine", "strategy", "schedule", "world_size", "seq_len", "mask", "phase", "workload",
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
    class BadShape(CostModel):
        name = "bad"

        def step_seconds(self, ctx):
            return np.ones((1, 3))

    with pytest.raises(InputError, match="shape"):
        simulate_ring(plan, wl, switch_topology(2), BadShape())


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
