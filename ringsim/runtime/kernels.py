"""Block attention kernels and the log-sum-exp merge used by the ring.

A ring step gives rank r a *block*: its queries against the key/value shard it holds, as one
kernel call on the trimmed block the program names (:class:`ringsim.blocks.BlockPlan`: rows,
columns, ``full``/``causal``/``masked``/``empty``; :func:`ringsim.blocks.block_plan` makes them).

Each block returns ``(out, lse)``: the block's softmax-weighted values and the natural-log
log-sum-exp of its scaled scores per query row, both fp32. Partial results combine exactly by
:func:`merge_`::

    lse = logaddexp(lse_a, lse_b);  out = out_a·e^(lse_a − lse) + out_b·e^(lse_b − lse)

A row that no key may see has ``lse = −inf`` and ``out = 0``; the merge keeps it that way without
NaN (the shift uses 0 where the merged lse is −inf).

Backward recomputes each block's probabilities from the *global* (merged) ``out`` and ``lse``:
``P = exp(S − lse)``, ``dV = Pᵀ dO``, ``dS = P ∘ (dO Vᵀ − rowsum(dO ∘ out))``, ``dQ = dS K·scale``,
``dK = dSᵀ Q·scale``. Summing the blocks' contributions gives the exact gradient.

Kernels: on CPU the fused ``aten._scaled_dot_product_flash_attention_for_cpu`` (and its backward)
for ``full`` and ``causal`` blocks — it accepts fewer KV heads than query heads (GQA) — and a
plain-torch path (explicit matmul, −inf mask) for ``masked`` blocks and as a fallback everywhere.
On CUDA the memory-efficient SDPA op (``aten._scaled_dot_product_efficient_attention``, which
returns the log-sum-exp) is tried first, falling back to plain torch if the build rejects the call.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ringsim import blocks as _blocks
from ringsim.blocks import BlockPlan, block_plan

__all__ = ["BlockPlan", "block_plan", "block_forward", "block_backward", "merge_", "attention_reference",
           "KERNELS"]

NEG_INF = float("-inf")


# ---- kernels --------------------------------------------------------------------------------------
KERNELS = ("auto", "fused", "plain")


def _expand_kv(x: torch.Tensor, heads: int) -> torch.Tensor:
    g = heads // x.shape[1]
    return x if g == 1 else x.repeat_interleave(g, dim=1)


def _fold_kv(dx: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """Sum a gradient over the query heads that share one KV head (inverse of :func:`_expand_kv`)."""
    B, H, n, D = dx.shape
    return dx if H == kv_heads else dx.view(B, kv_heads, H // kv_heads, n, D).sum(dim=2)


def _plain_forward(q, k, v, causal: bool, mask, scale: float):
    """Explicit masked attention in fp32; fully masked rows give lse −inf and out 0 (no NaN)."""
    qf, kf, vf = q.float(), _expand_kv(k, q.shape[1]).float(), _expand_kv(v, q.shape[1]).float()
    s = torch.matmul(qf, kf.transpose(-1, -2)) * scale
    allowed = _allowed(mask, causal, s.shape[-2], s.shape[-1], s.device)
    if allowed is not None:
        s = s.masked_fill(~allowed, NEG_INF)
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - torch.where(torch.isneginf(lse), 0.0, lse).unsqueeze(-1))
    return torch.matmul(p, vf), lse


def _allowed(mask, causal, nr, nc, device):
    if mask is not None:
        return torch.as_tensor(mask, device=device)
    if causal:  # bottom-right aligned (the plain triangle when square)
        return torch.ones(nr, nc, dtype=torch.bool, device=device).tril(diagonal=nc - nr)
    return None


def _split_causal(bp):
    """A bottom-right causal call of q_rows < k_rows as the fused kernels take it: a full call on
    the first k_rows − q_rows columns and a square causal call on the rest (the fused ops align
    ``is_causal`` top-left, which is the same triangle only when the call is square)."""
    off = (bp.c1 - bp.c0) - (bp.r1 - bp.r0)
    n = bp.r1 - bp.r0
    return (_blocks.BlockPlan("full", bp.r0, bp.r1, bp.c0, bp.c0 + off, n * off),
            _blocks.BlockPlan("causal", bp.r0, bp.r1, bp.c0 + off, bp.c1, n * (n + 1) // 2))


def _fused_forward(q, k, v, causal: bool, scale: float):
    if q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, causal, scale=scale)
        return out.float(), lse.float()
    if q.device.type == "cuda":
        H = q.shape[1]
        res = torch.ops.aten._scaled_dot_product_efficient_attention(
            q, _expand_kv(k, H), _expand_kv(v, H), None, True, 0.0, causal, scale=scale)
        out, lse = res[0], res[1]
        return out.float(), lse[..., : q.shape[2]].float()  # lse may be padded along the rows
    raise RuntimeError(f"no fused attention kernel for device {q.device.type}")


def block_forward(q, k, v, bp: BlockPlan, scale: float, kernel: str = "auto"):
    """Attention of the trimmed block ``q[..., bp.rows, :]`` × ``k/v[..., bp.cols, :]``.

    ``q`` is (B, H, n_q, D), ``k``/``v`` (B, H_kv, n_k, D) with H a multiple of H_kv.
    Returns ``(out, lse)`` for the trimmed rows, fp32, shapes (B, H, r1−r0, D) and (B, H, r1−r0).
    """
    if bp.kind == "causal" and bp.c1 - bp.c0 > bp.r1 - bp.r0 and kernel != "plain":
        full, tri = _split_causal(bp)
        out, lse = block_forward(q, k, v, full, scale, kernel)
        out_t, lse_t = block_forward(q, k, v, tri, scale, kernel)
        merge_(out, lse, out_t, lse_t)
        return out, lse
    qs = q[:, :, bp.rows].contiguous()
    ks = k[:, :, bp.cols].contiguous()
    vs = v[:, :, bp.cols].contiguous()
    if bp.kind in ("full", "causal") and kernel != "plain":
        try:
            return _fused_forward(qs, ks, vs, bp.kind == "causal", scale)
        except (RuntimeError, NotImplementedError):
            if kernel == "fused":
                raise
    return _plain_forward(qs, ks, vs, bp.kind == "causal", bp.mask, scale)


def _plain_backward(q, k, v, out, lse, dout, causal, mask, scale):
    H, Hkv = q.shape[1], k.shape[1]
    qf, kf, vf = q.float(), _expand_kv(k, H).float(), _expand_kv(v, H).float()
    s = torch.matmul(qf, kf.transpose(-1, -2)) * scale
    allowed = _allowed(mask, causal, s.shape[-2], s.shape[-1], s.device)
    finite = ~torch.isneginf(lse)
    p = torch.exp(s - torch.where(finite, lse, 0.0).unsqueeze(-1))
    keep = finite.unsqueeze(-1)
    if allowed is not None:
        keep = keep & allowed
    p = torch.where(keep, p, 0.0)
    do = dout.float()
    dv = torch.matmul(p.transpose(-1, -2), do)
    dp = torch.matmul(do, vf.transpose(-1, -2))
    delta = (do * out.float()).sum(dim=-1, keepdim=True)
    ds = p * (dp - delta)
    dq = torch.matmul(ds, kf) * scale
    dk = torch.matmul(ds.transpose(-1, -2), qf) * scale
    return dq, _fold_kv(dk, Hkv), _fold_kv(dv, Hkv)


def _fused_backward(q, k, v, out, lse, dout, causal, scale):
    if q.device.type == "cpu":
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            dout, q, k, v, out, lse, 0.0, causal, scale=scale)
        return dq.float(), dk.float(), dv.float()
    if q.device.type == "cuda":
        H, Hkv = q.shape[1], k.shape[1]
        ke, ve = _expand_kv(k, H), _expand_kv(v, H)
        seed = torch.zeros((), dtype=torch.int64, device=q.device)
        rows = q.shape[2]
        lse_padded = lse.new_zeros(lse.shape[:-1] + (-(-rows // 32) * 32,))  # the op's lse layout
        lse_padded[..., :rows] = lse
        dq, dk, dv, _ = torch.ops.aten._scaled_dot_product_efficient_attention_backward(
            dout, q, ke, ve, None, out, lse_padded, seed, seed, 0.0, [True, True, True, False], causal,
            scale=scale)
        return dq.float(), _fold_kv(dk.float(), Hkv), _fold_kv(dv.float(), Hkv)
    raise RuntimeError(f"no fused attention backward for device {q.device.type}")


def block_backward(q, k, v, out, lse, dout, bp: BlockPlan, scale: float, kernel: str = "auto"):
    """Gradient contributions of one block given the global ``out``/``lse``/``dout`` of the rank's
    queries (all rows; the block's rows are taken here). Returns fp32 ``(dq_rows, dk_cols, dv_cols)``
    for the trimmed rows and columns."""
    if bp.kind == "causal" and bp.c1 - bp.c0 > bp.r1 - bp.r0 and kernel != "plain":
        full, tri = _split_causal(bp)
        dq, dk, dv = block_backward(q, k, v, out, lse, dout, full, scale, kernel)
        dq_t, dk_t, dv_t = block_backward(q, k, v, out, lse, dout, tri, scale, kernel)
        return dq + dq_t, torch.cat([dk, dk_t], dim=2), torch.cat([dv, dv_t], dim=2)
    qs = q[:, :, bp.rows].contiguous()
    ks = k[:, :, bp.cols].contiguous()
    vs = v[:, :, bp.cols].contiguous()
    os_ = out[:, :, bp.rows].contiguous()
    ls = lse[:, :, bp.rows].contiguous()
    ds = dout[:, :, bp.rows].contiguous()
    if bp.kind in ("full", "causal") and kernel != "plain":
        try:
            return _fused_backward(qs, ks, vs, os_.to(q.dtype), ls, ds.to(q.dtype), bp.kind == "causal", scale)
        except (RuntimeError, NotImplementedError):
            if kernel == "fused":
                raise
    return _plain_backward(qs, ks, vs, os_, ls, ds, bp.kind == "causal", bp.mask, scale)


def merge_(out_acc: torch.Tensor, lse_acc: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor) -> None:
    """In place: fold a block's ``(out_b, lse_b)`` into the running ``(out_acc, lse_acc)`` (fp32).

    Stable for −inf rows (either side or both) and for extreme logits: only differences of
    log-sum-exps are exponentiated, and they are ≤ 0.
    """
    new = torch.logaddexp(lse_acc, lse_b)
    shift = torch.where(torch.isneginf(new), 0.0, new)
    wa = torch.exp(lse_acc - shift).unsqueeze(-1)
    wb = torch.exp(lse_b - shift).unsqueeze(-1)
    out_acc.mul_(wa).add_(out_b * wb)
    lse_acc.copy_(new)


def attention_reference(q, k, v, q_pos, k_pos, lo: int, hi: int, scale: float, dout=None,
                        dtype=torch.float64, head_chunk: int = 1, docs=None, allowed=None):
    """Single-process attention over whole sequences by explicit math (default fp64), for checks.

    Returns ``(out, lse)`` or, with ``dout``, ``(out, lse, dq, dk, dv)``; fully masked rows give
    out 0, lse −inf and zero gradients. Heads are processed ``head_chunk`` at a time to bound memory.
    ``allowed`` (an explicit [Tq, Tk] boolean mask) replaces the band ``lo <= q − k <= hi``;
    ``docs`` (packed documents, one id per position, −1 for padding; positions are the same for
    queries and keys): a pair is allowed only inside one document.
    """
    H, Hkv = q.shape[1], k.shape[1]
    g = H // Hkv
    qp = torch.as_tensor(np.asarray(q_pos), device=q.device)
    kp = torch.as_tensor(np.asarray(k_pos), device=q.device)
    if allowed is None:  # the band lo <= q - k <= hi; or an explicit (q, k) mask (runner's --check)
        d = qp[:, None] - kp[None, :]
        allowed = (d >= lo) & (d <= hi)
    allowed = torch.as_tensor(allowed, dtype=torch.bool, device=q.device)
    if docs is not None:  # packed documents: same document only; −1 (padding) sees nothing
        doc = torch.as_tensor(np.asarray(docs), device=q.device)
        allowed = allowed & (doc[:, None] == doc[None, :]) & (doc[:, None] >= 0)
    outs, lses, dqs = [], [], []
    dk = torch.zeros(k.shape, dtype=dtype, device=k.device) if dout is not None else None
    dv = torch.zeros(v.shape, dtype=dtype, device=v.device) if dout is not None else None
    for h0 in range(0, H, head_chunk):
        hs = slice(h0, min(H, h0 + head_chunk))
        kv_idx = torch.arange(hs.start, hs.stop, device=q.device) // g
        qh = q[:, hs].to(dtype)
        kh = k[:, kv_idx].to(dtype)
        vh = v[:, kv_idx].to(dtype)
        s = torch.matmul(qh, kh.transpose(-1, -2)) * scale
        s = s.masked_fill(~allowed, NEG_INF)
        lse = torch.logsumexp(s, dim=-1)
        finite = ~torch.isneginf(lse)
        p = torch.where(allowed & finite.unsqueeze(-1),
                        torch.exp(s - torch.where(finite, lse, 0.0).unsqueeze(-1)), 0.0)
        o = torch.matmul(p, vh)
        outs.append(o)
        lses.append(lse)
        if dout is not None:
            do = dout[:, hs].to(dtype)
            dvh = torch.matmul(p.transpose(-1, -2), do)
            dp = torch.matmul(do, vh.transpose(-1, -2))
            ds = p * (dp - (do * o).sum(-1, keepdim=True))
            dqs.append(torch.matmul(ds, kh) * scale)
            dkh = torch.matmul(ds.transpose(-1, -2), qh) * scale
            dk.index_add_(1, kv_idx, dkh)
            dv.index_add_(1, kv_idx, dvh)
    out, lse = torch.cat(outs, 1), torch.cat(lses, 1)
    if dout is None:
        return out, lse
    return out, lse, torch.cat(dqs, 1), dk, dv


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
