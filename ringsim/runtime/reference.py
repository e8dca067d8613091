"""The reference side of ``ringsim run --check``, built from definitions only.

A check that derives its expectation from the code it checks cannot fail on that code's bugs: if
the reference mask came from :meth:`ringsim.schedules.Mask.bounds` (as the ring's blocks do), a
sliding window one token too wide would widen the ring and its reference alike, and pass. So the
reference mask here is the dense T × T matrix written straight from the masks' definitions
(DESIGN.md §3.1, README "Conventions"), position by position:

- ``full``: every query sees every key;
- ``causal``: query q sees key k iff k ≤ q;
- ``sliding:W``: query q sees itself and the W − 1 keys before it, i.e. q − W < k ≤ q.

It is O(T²) memory, which is what a single-process reference costs anyway.
"""
from __future__ import annotations

__all__ = ["dense_mask"]


def dense_mask(mask: str, seq_len: int):
    """``allowed[q, k]`` (bool, T × T) for the mask written as ``full``, ``causal`` or ``sliding:W``."""
    import torch

    text = str(mask).strip().lower()
    q = torch.arange(seq_len).unsqueeze(1)  # query positions, one per row
    k = torch.arange(seq_len).unsqueeze(0)  # key positions, one per column
    if text == "full":
        return torch.ones(seq_len, seq_len, dtype=torch.bool)
    if text == "causal":
        return k <= q
    if text.startswith("sliding:"):
        window = int(text.split(":", 1)[1])
        if window < 1:
            raise ValueError(f"sliding window must be at least 1, got {window}")
        return (k <= q) & (k > q - window)
    raise ValueError(f"no reference for mask {mask!r}")
