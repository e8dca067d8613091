"""The plan: partitions, exact pair and tile counts against brute force, and the summary figures."""
import numpy as np
import pytest

from ringsim.schedules import Plan, parse_mask
from ringsim.units import InputError

SCHEDULES = ["contiguous", "striped", "zigzag"]
MASKS = ["full", "causal", "sliding:1", "sliding:3", "sliding:7", "sliding:1000"]


def brute_mask(T, mask):
    lo, hi = parse_mask(mask).bounds(T)
    d = np.arange(T)[:, None] - np.arange(T)[None, :]
    return (d >= lo) & (d <= hi)


def brute_pairs(plan, M):
    G = plan.world_size
    out = np.zeros((G, G), dtype=np.int64)
    for r in range(G):
        for s in range(G):
            out[r, s] = M[np.ix_(plan.tokens(r), plan.tokens((r - s) % G))].sum()
    return out


def brute_tiles(plan, M, tq, tk):
    G = plan.world_size
    out = np.zeros((G, G), dtype=np.int64)
    for r in range(G):
        for s in range(G):
            B = M[np.ix_(plan.tokens(r), plan.tokens((r - s) % G))]
            n = B.shape[0]
            out[r, s] = sum(B[a:a + tq, b:b + tk].any() for a in range(0, n, tq) for b in range(0, n, tk))
    return out


def cases():
    for sched in SCHEDULES:
        for G in (1, 2, 3, 5, 6):
            for mult in (1, 3, 7):
                yield sched, G, 2 * G * mult


@pytest.mark.parametrize("sched,G,T", list(cases()))
def test_pairs_and_tiles_match_brute_force(sched, G, T):
    for mask in MASKS:
        plan = Plan(sched, G, T, mask)
        M = brute_mask(T, mask)
        np.testing.assert_array_equal(plan.pairs, brute_pairs(plan, M), err_msg=f"{sched} G={G} T={T} {mask}")
        for tq, tk in ((1, 1), (2, 3), (4, 4), (5, 2), (64, 64)):
            np.testing.assert_array_equal(plan.tiles(tq, tk), brute_tiles(plan, M, tq, tk),
                                          err_msg=f"tiles {tq}x{tk} {sched} G={G} T={T} {mask}")


@pytest.mark.parametrize("sched", SCHEDULES)
@pytest.mark.parametrize("G,T", [(1, 8), (3, 42), (7, 7 * 2 * 11), (8, 1 << 20)])
def test_totals(sched, G, T):
    assert Plan(sched, G, T, "causal").total_pairs() == T * (T + 1) // 2
    assert Plan(sched, G, T, "full").total_pairs() == T * T
    for W in (1, 5, T + 3):
        expected = W * (W + 1) // 2 + (T - W) * W if T >= W else T * (T + 1) // 2
        assert Plan(sched, G, T, f"sliding:{W}").total_pairs() == expected


@pytest.mark.parametrize("sched", SCHEDULES)
@pytest.mark.parametrize("G,T", [(1, 6), (3, 30), (5, 50)])
def test_shard_unshard_is_a_permutation(sched, G, T):
    plan = Plan(sched, G, T, "causal")
    perm = plan.permutation
    assert sorted(perm.tolist()) == list(range(T))
    x = np.arange(T) * 10 + 3
    parts = plan.shard(x)
    assert all(len(p) == T // G for p in parts)
    np.testing.assert_array_equal(plan.unshard(parts), x)
    # 2-D along another axis
    y = np.random.default_rng(0).normal(size=(2, T, 3))
    np.testing.assert_array_equal(plan.unshard(plan.shard(y, axis=1), axis=1), y)


def test_partitions_as_designed():
    G, T = 4, 16
    assert Plan("contiguous", G, T).tokens(1).tolist() == [4, 5, 6, 7]
    assert Plan("striped", G, T).tokens(1).tolist() == [1, 5, 9, 13]
    assert Plan("zigzag", G, T).tokens(1).tolist() == [2, 3, 12, 13]
    p = Plan("zigzag", G, T)
    assert [p.shard_owner(1, s) for s in range(G)] == [1, 0, 3, 2]


def test_imbalance_figures_at_1m():
    G, T = 8, 1 << 20
    assert Plan("contiguous", G, T, "causal").imbalance() == pytest.approx((2 * G - 1) / G, abs=5e-4)
    assert Plan("zigzag", G, T, "causal").imbalance() <= 1.001
    assert Plan("striped", G, T, "causal").imbalance() <= 1.001
    # zigzag balances exactly: every rank does the same work
    w = Plan("zigzag", G, T, "causal").work_per_rank()
    assert (w == w[0]).all()


def test_large_world_is_fast_and_exact():
    plan = Plan("zigzag", 1024, 1 << 20, "causal")
    assert plan.total_pairs() == (1 << 20) * ((1 << 20) + 1) // 2
    assert plan.tiles(128, 128).sum() > 0


def test_bad_lengths_name_nearest_valid():
    with pytest.raises(InputError, match="nearest valid lengths: 992 or 1008"):
        Plan("zigzag", 8, 1001)
    with pytest.raises(InputError, match="nearest valid lengths: 8"):
        Plan("contiguous", 8, 3)
    with pytest.raises(InputError, match="unknown schedule"):
        Plan("spiral", 8, 64)
    with pytest.raises(InputError, match="unknown mask"):
        Plan("zigzag", 8, 64, "diagonal")
