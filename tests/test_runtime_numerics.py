"""Block kernels and the log-sum-exp merge, in one process (no torch.distributed).

The ring's arithmetic is: for every (rank, step) block, ``block_forward`` on the plan's mask and
``merge_`` into the running (out, lse); backward sums ``block_backward`` contributions. Driving
that loop here over every rank and step must reproduce fp64 attention exactly (to fp32 rounding).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ringsim.blocks import block_plan  # noqa: E402
from ringsim.runtime.kernels import (attention_reference, block_backward, block_forward,  # noqa: E402
                                     merge_)
from ringsim.runtime.reference import dense_mask  # noqa: E402
from ringsim.schedules import SCHEDULES, Plan  # noqa: E402

ATOL, RTOL = 2e-5, 1e-4


def _assert_close(got, ref, what):
    got, ref = got.double(), ref.double()
    fin = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(got), fin), f"{what}: non-finite entries differ"
    assert torch.all(got[~fin] == ref[~fin]), f"{what}: infinities differ"
    err = (got[fin] - ref[fin]).abs()
    assert torch.all(err <= ATOL + RTOL * ref[fin].abs()), f"{what}: max err {err.max().item():.3g}"


def _simulate_ring(plan, q, k, v, dout, kernel="auto"):
    """Every rank's forward and backward block by block, as the ring runs them; global order."""
    G, T = plan.world_size, plan.seq_len
    lo, hi = plan.mask.bounds(T)
    scale = 1 / math.sqrt(q.shape[-1])
    outs, lses, dqs = [], [], []
    dk = torch.zeros(k.shape, dtype=torch.float64)
    dv = torch.zeros(v.shape, dtype=torch.float64)
    for r in range(G):
        qt = plan.tokens(r)
        qr, dor = q[:, :, qt], dout[:, :, qt]
        out = torch.zeros(qr.shape)
        lse = torch.full(qr.shape[:-1], float("-inf"))
        blocks = []
        for s in range(G):
            kt = plan.tokens(plan.shard_owner(r, s))
            bp = block_plan(qt, kt, lo, hi)
            assert bp.pairs == plan.pairs[r, s]  # one source of truth
            blocks.append((bp, kt))
            if bp.kind != "empty":
                o_b, l_b = block_forward(qr, k[:, :, kt], v[:, :, kt], bp, scale, kernel)
                merge_(out[:, :, bp.rows], lse[:, :, bp.rows], o_b, l_b)
        dq = torch.zeros(qr.shape)
        for bp, kt in blocks:
            if bp.kind == "empty":
                continue
            a, b, c = block_backward(qr, k[:, :, kt], v[:, :, kt], out, lse, dor, bp, scale, kernel)
            dq[:, :, bp.rows] += a
            dk[:, :, kt[bp.cols]] += b.double()
            dv[:, :, kt[bp.cols]] += c.double()
        outs.append(out.numpy())
        lses.append(lse.numpy())
        dqs.append(dq.numpy())
    un = lambda xs: torch.from_numpy(plan.unshard(xs, axis=2))  # noqa: E731
    return un(outs), un(lses), un(dqs), dk, dv


def _inputs(T, H, Hkv, D, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, H, T, D, generator=g) * scale
    k = torch.randn(1, Hkv, T, D, generator=g) * scale
    v = torch.randn(1, Hkv, T, D, generator=g)
    do = torch.randn(1, H, T, D, generator=g)
    return q, k, v, do


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("mask", ["causal", "full", "sliding:5"])
@pytest.mark.parametrize("G,T,H,Hkv", [(3, 90, 2, 2), (4, 120, 4, 2)])
@pytest.mark.parametrize("kernel", ["auto", "plain"])
def test_blocks_and_merge_equal_fp64_attention(schedule, mask, G, T, H, Hkv, kernel):
    plan = Plan(schedule, G, T, mask)
    q, k, v, do = _inputs(T, H, Hkv, 16)
    lo, hi = plan.mask.bounds(T)
    pos = np.arange(T)
    ref = attention_reference(q, k, v, pos, pos, lo, hi, 0.25, dout=do, allowed=dense_mask(mask, T))  # definition
    got = _simulate_ring(plan, q, k, v, do, kernel)
    for name, a, b in zip(("out", "lse", "dq", "dk", "dv"), got, ref):
        _assert_close(a, b, f"{schedule} {mask} G={G} {name}")


def test_block_plan_kinds_match_the_schedules_geometry():
    """Trimming turns each schedule's causal blocks into whole fused-kernel shapes."""
    G, T = 4, 64
    n = T // G
    lo, hi = Plan("zigzag", G, T, "causal").mask.bounds(T)
    p = Plan("zigzag", G, T, "causal")
    c = n // 2
    for r in range(G):
        for s in range(G):
            o = p.shard_owner(r, s)
            bp = block_plan(p.tokens(r), p.tokens(o), lo, hi)
            if s == 0:
                assert (bp.kind, bp.r0, bp.r1, bp.c0, bp.c1) == ("causal", 0, n, 0, n)
            elif o < r:  # every query sees the owner's first chunk only
                assert (bp.kind, bp.r0, bp.r1, bp.c0, bp.c1) == ("full", 0, n, 0, c)
            else:  # only this rank's second chunk sees the owner's tokens, all of them
                assert (bp.kind, bp.r0, bp.r1, bp.c0, bp.c1) == ("full", c, n, 0, n)
    p = Plan("striped", G, T, "causal")
    for r in range(G):
        for s in range(1, G):
            o = p.shard_owner(r, s)
            bp = block_plan(p.tokens(r), p.tokens(o), lo, hi)
            # o < r: lower triangle with diagonal; o > r: strictly lower = shifted by one row and column
            want = (0, n, 0, n) if o < r else (1, n, 0, n - 1)
            assert (bp.kind, bp.r0, bp.r1, bp.c0, bp.c1) == ("causal",) + want
    p = Plan("contiguous", G, T, "causal")
    kinds = [[block_plan(p.tokens(r), p.tokens(p.shard_owner(r, s)), lo, hi).kind for s in range(G)] for r in range(G)]
    assert kinds == [["causal", "empty", "empty", "empty"], ["causal", "full", "empty", "empty"],
                     ["causal", "full", "full", "empty"], ["causal", "full", "full", "full"]]


def test_merge_is_stable_for_masked_rows_and_extreme_logits():
    out_a = torch.tensor([[0.0, 0.0], [1.0, 2.0], [0.0, 0.0], [3.0, 4.0]])
    lse_a = torch.tensor([float("-inf"), 5000.0, float("-inf"), -80.0])
    out_b = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 6.0], [7.0, 8.0]])
    lse_b = torch.tensor([float("-inf"), float("-inf"), 9000.0, 80.0])
    merge_(out_a, lse_a, out_b, lse_b)
    assert torch.isfinite(out_a).all()
    assert lse_a[0] == float("-inf") and out_a[0].tolist() == [0.0, 0.0]  # both empty stays empty
    assert lse_a[1] == 5000.0 and out_a[1].tolist() == [1.0, 2.0]  # empty side ignored
    assert lse_a[2] == 9000.0 and out_a[2].tolist() == [5.0, 6.0]
    # weights e^-160 and ~1: the larger side wins to fp32 precision, nothing overflows
    assert abs(lse_a[3].item() - 80.0) < 1e-4 and torch.allclose(out_a[3], torch.tensor([7.0, 8.0]))


def test_extreme_logits_match_fp64():
    """Scores in the thousands (q, k scaled ×30): the fp32 merge still matches fp64."""
    plan = Plan("zigzag", 2, 64, "causal")
    q, k, v, do = _inputs(64, 2, 2, 16, seed=3, scale=30.0)
    lo, hi = plan.mask.bounds(64)
    pos = np.arange(64)
    ref = attention_reference(q.double(), k.double(), v.double(), pos, pos, lo, hi, 0.25, dout=do.double())
    got = _simulate_ring(plan, q, k, v, do, "plain")
    assert max(abs(ref[1]).max().item(), 0) > 1000  # really extreme
    for name, a, b in zip(("out", "lse"), got[:2], ref[:2]):
        assert torch.isfinite(a).all()
        err = (a.double() - b).abs()
        assert torch.all(err <= 1e-3 * (1 + b.abs())), f"{name}: {err.max().item()}"


@pytest.mark.parametrize("kernel", ["auto", "plain"])
def test_fully_masked_rows_give_zero_output_and_gradients_without_nan(kernel):
    """Custom positions where some queries see no key at all (globally): out 0, lse −inf, grads 0."""
    q_pos = np.array([0, 1, 2, 3, 20, 21])
    k_pos = np.array([10, 11, 12, 13, 14, 15])
    lo, hi = 0, 7  # sliding window of 8: queries 0..3 see nothing, 20 and 21 see 13..15 / 14..15
    bp = block_plan(q_pos, k_pos, lo, hi)
    assert bp.kind == "masked" and (bp.r0, bp.r1) == (4, 6) and (bp.c0, bp.c1) == (3, 6)
    q, k, v, do = _inputs(6, 2, 1, 8, seed=5)
    out = torch.zeros(q.shape)
    lse = torch.full(q.shape[:-1], float("-inf"))
    o_b, l_b = block_forward(q, k, v, bp, 0.3, kernel)
    merge_(out[:, :, bp.rows], lse[:, :, bp.rows], o_b, l_b)
    dq = torch.zeros(q.shape)
    a, b, c = block_backward(q, k, v, out, lse, do, bp, 0.3, kernel)
    dq[:, :, bp.rows] += a
    ref = attention_reference(q, k, v, q_pos, k_pos, lo, hi, 0.3, dout=do)
    assert torch.isneginf(lse[:, :, :4]).all() and (out[:, :, :4] == 0).all() and (dq[:, :, :4] == 0).all()
    for got, want, name in ((out, ref[0], "out"), (lse, ref[1], "lse"), (dq, ref[2], "dq")):
        _assert_close(got, want, name)
    dk = torch.zeros(k.shape)
    dk[:, :, bp.cols] += b
    _assert_close(dk, ref[3], "dk")
    assert torch.isfinite(b).all() and torch.isfinite(c).all()


def test_plain_path_handles_rows_masked_inside_a_block():
    """A masked block whose trimmed rows still contain a row with no allowed key (plain kernel)."""
    q_pos = np.array([5, 9, 30])
    k_pos = np.array([4, 5, 29])
    bp = block_plan(q_pos, k_pos, 0, 1)  # q sees k with q−k ∈ {0, 1}: 5→{4,5}, 9→{}, 30→{29}
    assert bp.kind == "masked" and (bp.r0, bp.r1) == (0, 3)
    q, k, v, do = _inputs(3, 1, 1, 4, seed=2)
    o, l = block_forward(q, k, v, bp, 0.5)
    assert torch.isfinite(o).all() and torch.isneginf(l[0, 0, 1]) and (o[0, 0, 1] == 0).all()
    ref = attention_reference(q, k, v, q_pos, k_pos, 0, 1, 0.5)
    _assert_close(o, ref[0], "out")
    _assert_close(l, ref[1], "lse")


def test_bf16_blocks_accumulate_in_fp32():
    plan = Plan("zigzag", 2, 64, "causal")
    q, k, v, do = (t.bfloat16() for t in _inputs(64, 2, 2, 16, seed=4))
    lo, hi = plan.mask.bounds(64)
    pos = np.arange(64)
    ref = attention_reference(q.double(), k.double(), v.double(), pos, pos, lo, hi, 0.25, dout=do.double())
    got = _simulate_ring(plan, q, k, v, do)
    for name, a, b in zip(("out", "lse", "dq", "dk", "dv"), got, ref):
        assert a.dtype == torch.float32 or name in ("dk", "dv")
        assert (a.double() - b).abs().max().item() < 5e-2, name


@pytest.mark.parametrize("kernel", ["auto", "plain"])
@pytest.mark.parametrize("nq,nk", [(20, 60), (7, 7), (1, 33)])
def test_bottom_right_causal_calls_equal_fp64(kernel, nq, nk):
    """A chunk of queries against every key up to the chunk's end is one ``causal`` call aligned
    bottom-right (row i sees the first nk − nq + i + 1 keys): its block plan, its tiles (against a
    brute-force count) and its forward/backward (fused: split into a full and a square causal call)."""
    from ringsim.blocks import call_tiles

    q_pos, k_pos = np.arange(nk - nq, nk), np.arange(nk)
    bp = block_plan(q_pos, k_pos, 0, 10 ** 9)
    kind = "full" if nq == 1 else "causal"  # one row sees every key: a full call
    assert (bp.kind, bp.r0, bp.r1, bp.c0, bp.c1) == (kind, 0, nq, 0, nk)
    assert bp.pairs == nq * nk - nq * (nq - 1) // 2
    allowed = (q_pos[:, None] - k_pos[None, :]) >= 0
    for tq, tk in ((8, 16), (3, 5), (128, 128)):
        # brute force: a tile counts when any of its (row, column) pairs is allowed
        R, C = -(-nq // tq), -(-nk // tk)
        pad = np.zeros((R * tq, C * tk), dtype=bool)
        pad[:nq, :nk] = allowed
        brute = int(pad.reshape(R, tq, C, tk).any(axis=(1, 3)).sum())
        assert call_tiles(kind, nq, nk, None, tq, tk) == brute
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 4, nq, 16, generator=g)
    k, v = torch.randn(1, 2, nk, 16, generator=g), torch.randn(1, 2, nk, 16, generator=g)
    do = torch.randn(1, 4, nq, 16, generator=g)
    out, lse = block_forward(q, k, v, bp, 0.25, kernel)
    ref = attention_reference(q, k, v, q_pos, k_pos, 0, 10 ** 9, 0.25, dout=do)
    assert torch.allclose(out.double(), ref[0], atol=2e-6) and torch.allclose(lse.double(), ref[1], atol=2e-6)
    for got, want in zip(block_backward(q, k, v, out, lse, do, bp, 0.25, kernel), ref[2:]):
        assert torch.allclose(got.double(), want, atol=5e-6)
