"""Packed documents: document masks, per-document layouts and their exact work (DESIGN.md §3.2b).

Long-context training packs many documents into one sequence of T tokens ("THD", varlen or
cu_seqlens attention) and masks attention so that a token sees only tokens of its own document.
The mask inside a document is one of ringsim's masks (``schedules.Mask``), applied to the
distance d = q − k between two positions of the *same* document: ``causal`` (0 ≤ d, the default),
``full`` (any d) or ``sliding:W`` (0 ≤ d < W).

This module answers, exactly and without a T×T mask, how much attention work every rank does:

- **specs** — :func:`parse_documents` reads document lengths (``4K,60K,1000``, a file of one length
  per line, a cu_seqlens JSON list inline or in a ``.json`` file) or a distribution of lengths to
  draw packs from (``lognormal:mean=8K,sigma=1.2``, ``file:lengths.txt``);
  :func:`sample_packs` draws packs of exactly T tokens from a distribution.
- **layouts** — :func:`make_layout` places a pack on G ranks: ``contiguous``, ``striped`` and
  ``zigzag`` over the whole pack as ``schedules.Plan`` defines them, ``zigzag-doc`` (every document
  cut in 2G chunks, rank r takes chunks r and 2G−1−r of each; TransformerEngine's THD layout) and
  ``balanced`` (equal-size chunks of the pack dealt to ranks by a work-aware greedy, see
  :func:`make_layout`). Every rank holds the same number of positions, in increasing order.
- **work** — :func:`pair_table` gives ``pairs[r, s]``, the allowed (query, key) pairs of rank r
  against the shard it holds at ring step s (rank (r − s) mod G's, DESIGN.md §3.1);
  :func:`work_per_rank` gives only its row sums, far cheaper; :func:`imbalance` is max/mean of
  those; :func:`imbalance_distribution` summarises it over many sampled packs.

**Padding.** A layout lives on a *padded* pack of ``padded_len`` positions. Document d occupies
positions ``[doc_starts[d], doc_starts[d] + doc_lengths[d])``; every other position is a padding
token, which attends to nothing and which nothing attends to. Whole-pack layouts pad the tail of
the pack up to a multiple of their unit (G for contiguous and striped, 2G for zigzag, K·G for
balanced with K chunks per rank); ``zigzag-doc`` pads every document at its end up to a multiple
of 2G, as TransformerEngine's THD format does (``cu_seqlens_padded``). A pack whose length is
already a multiple of the unit has no padding, and a pack of one document then gives exactly
``Plan(schedule, G, T, mask).pairs``.

**Counting.** Query ``q`` of a document of n tokens, at position p inside it, is allowed the keys
of the same document at positions [p − hi, p − lo] ∩ [0, n), where (lo, hi) are the mask's band.
Between a run of queries and a run of keys of one document that are arithmetic progressions of
the same stride, the allowed pairs are lattice points in a band of a rectangle, counted in closed
form by ``schedules._n_le`` (see :func:`count_band`). The layouts differ in how they avoid
enumerating (rank, rank, document) triples — G² × documents is 2·10⁹ for 1024 ranks and 2,000
documents:

- whole-pack chunk layouts (contiguous, zigzag, balanced: chunks of c tokens, chunk i on rank
  ``owner[i]``): a document is a partial head chunk, a run of whole chunks and a partial tail
  chunk. Whole chunks i, j of one document at distance δ = i − j hold φ(δ) pairs, the same for
  every document; φ is a plateau of c² plus a few partial values. Heads and tails are counted
  one by one (≤ 4 per chunk of the run); the run × run part on the plateau is, for each chunk i,
  a window of key chunks j, counted per owner rank from a cumulative (chunk, rank) count table:
  O(chunks × G) in all.
- ``zigzag-doc``: every document uses the same 2G-chunk grid and the same chunk → rank map, so the
  documents are summed on one 2G × 2G chunk grid first, as rectangles in (query chunk, distance)
  coordinates (2-D difference arrays), then folded onto ranks: O(documents + G²).
- ``striped``: rank r holds positions ≡ r (mod G). Within one document the count between ranks r
  and o depends only on whether r and o lie before the document's first and end residues and on
  a few classes of r − o, so each document adds a handful of anchored rectangles to per-class
  tables: O(documents + G²).

Per-rank work needs no pairs of ranks at all: the work of a query depends only on its document
and position (p + 1 causal, n full, min(p + 1, W) sliding), so a rank's work is a sum of closed
forms over its chunks — what the imbalance checker uses for thousands of packs.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass

import numpy as np

from .schedules import SCHEDULES, Mask, _n_le, parse_mask
from .units import InputError, parse_int_list, parse_seq_len

__all__ = [
    "LAYOUTS", "DocumentSpec", "Layout", "parse_documents", "parse_layout", "sample_packs",
    "make_layout", "pair_table", "work_per_rank", "imbalance", "imbalance_distribution",
    "count_band", "DEFAULT_BALANCED_CHUNKS",
]

LAYOUTS = tuple(SCHEDULES) + ("zigzag-doc", "balanced")
#: chunks per rank of ``balanced`` when the layout is named without ``:K``
DEFAULT_BALANCED_CHUNKS = 8

_FORMS = ("give lengths (4K,60K,1000), a cu_seqlens list ([0,4096,10000]), a file of lengths, "
          "lognormal:mean=8K,sigma=1.2 or file:lengths.txt")


# ================================================================================================
# Document specs: explicit lengths or a distribution to draw packs from
# ================================================================================================
@dataclass(frozen=True)
class DocumentSpec:
    """What ``--documents`` said: one pack of explicit lengths, or a distribution of lengths.

    - ``kind == "lengths"``: ``lengths`` is the pack, documents in order (cu_seqlens order).
    - ``kind == "lognormal"``: a length is ``max(1, round(exp(mu + sigma·Z)))``, Z standard normal;
      the median is exp(mu), the mean exp(mu + sigma²/2).
    - ``kind == "empirical"``: a length is drawn uniformly, with replacement, from ``lengths``
      (every listed document equally likely).
    """

    kind: str
    lengths: tuple[int, ...] = ()
    mu: float = 0.0
    sigma: float = 0.0
    source: str = ""

    @property
    def is_distribution(self) -> bool:
        return self.kind != "lengths"

    @property
    def median_tokens(self) -> float:
        if self.kind == "lognormal":
            return math.exp(self.mu)
        return float(np.median(self.lengths))

    @property
    def mean_tokens(self) -> float:
        if self.kind == "lognormal":
            return math.exp(self.mu + self.sigma ** 2 / 2)
        return float(np.mean(self.lengths))

    def describe(self) -> dict:
        d = {"kind": self.kind, "source": self.source}
        if self.kind == "lognormal":
            d.update(mu=self.mu, sigma=self.sigma, median_tokens=self.median_tokens, mean_tokens=self.mean_tokens)
        elif self.kind == "empirical":
            d.update(distinct_lengths=len(set(self.lengths)), listed=len(self.lengths),
                     median_tokens=self.median_tokens, mean_tokens=self.mean_tokens)
        else:
            d.update(documents=len(self.lengths), total_tokens=int(sum(self.lengths)))
        return d


_LIST_RE = re.compile(r"^\s*\d+\s*[kKmMgG]?\s*(,\s*\d+\s*[kKmMgG]?\s*)*,?\s*$")
_AMOUNT_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMgG]?)\s*$")
_SUFFIX = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _parse_amount(text: str, what: str) -> float:
    """A positive token count that may be fractional: ``8K`` → 8192.0, ``1.5K`` → 1536.0."""
    m = _AMOUNT_RE.match(text)
    if not m:
        raise InputError(f"{what} {text!r} is not a token count; write e.g. 8K or 8192")
    v = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if not v > 0:
        raise InputError(f"{what} must be positive, got {text!r}")
    return v


def _cu_seqlens_to_lengths(values, where: str) -> list[int]:
    """cu_seqlens ``[0, n0, n0+n1, …]`` → lengths ``[n0, n1, …]``; must start at 0 and increase."""
    if not isinstance(values, list) or len(values) < 2:
        raise InputError(f"{where}: cu_seqlens must be a JSON list of at least two integers, e.g. [0, 4096, 10000]")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise InputError(f"{where}: cu_seqlens must hold integers only, e.g. [0, 4096, 10000]")
    if values[0] != 0:
        raise InputError(f"{where}: cu_seqlens must start at 0 (got {values[0]}); it lists document boundaries")
    lengths = np.diff(np.asarray(values, dtype=np.int64))
    bad = np.flatnonzero(lengths <= 0)
    if bad.size:
        i = int(bad[0])
        raise InputError(f"{where}: cu_seqlens must increase strictly, but entry {i + 1} ({values[i + 1]}) "
                         f"follows {values[i]}; every document needs at least one token")
    return lengths.tolist()


def _read_lengths_file(path: str) -> list[int]:
    """A file of document lengths: one per line (K/M suffixes, blank lines and # comments allowed),
    or a cu_seqlens JSON list (a ``.json`` file, or any file whose text starts with ``[``)."""
    if not os.path.isfile(path):
        raise InputError(f"document lengths file {path} does not exist; give a file with one length per line "
                         "or a cu_seqlens JSON list")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read document lengths file {path}: {e}") from None
    if path.lower().endswith(".json") or text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); "
                             "give a cu_seqlens list such as [0, 4096, 10000]") from None
        return _cu_seqlens_to_lengths(values, path)
    lengths = []
    for no, line in enumerate(text.splitlines(), 1):
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        try:
            lengths.append(parse_seq_len(s, "document length"))
        except InputError:
            raise InputError(f"{path} line {no}: {s!r} is not a document length; write one positive "
                             "integer (K/M suffixes allowed) per line") from None
    if not lengths:
        raise InputError(f"document lengths file {path} lists no lengths; write one positive integer per line")
    return lengths


def _parse_lognormal(params: str, text: str) -> DocumentSpec:
    kv = {}
    for part in [p for p in params.split(",") if p.strip()]:
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("mean", "median", "sigma"):
            raise InputError(f"documents {text!r}: parameter {part.strip()!r} is not mean=, median= or sigma=; "
                             "write e.g. lognormal:mean=8K,sigma=1.2")
        if key in kv:
            raise InputError(f"documents {text!r}: {key}= is given twice")
        kv[key] = value.strip()
    if ("mean" in kv) == ("median" in kv):
        raise InputError(f"documents {text!r}: give exactly one of mean= (arithmetic mean length) or median= "
                         "(exp(mu)), e.g. lognormal:mean=8K,sigma=1.2")
    if "sigma" not in kv:
        raise InputError(f"documents {text!r}: sigma= is missing; write e.g. lognormal:mean=8K,sigma=1.2")
    try:
        sigma = float(kv["sigma"])
    except ValueError:
        raise InputError(f"documents {text!r}: sigma {kv['sigma']!r} is not a number") from None
    if not 0 <= sigma <= 5:
        raise InputError(f"documents {text!r}: sigma must be in [0, 5] (the log-space standard deviation), "
                         f"got {kv['sigma']}")
    if "mean" in kv:
        mu = math.log(_parse_amount(kv["mean"], "lognormal mean")) - sigma ** 2 / 2
    else:
        mu = math.log(_parse_amount(kv["median"], "lognormal median"))
    return DocumentSpec("lognormal", mu=mu, sigma=sigma, source=text)


def parse_documents(text: str, seq_len: int | None = None) -> DocumentSpec:
    """Read a ``--documents`` value.

    Explicit packs (``kind="lengths"``):
      - a comma list of lengths, binary K/M suffixes as everywhere in ringsim: ``4K,60K,1000``;
      - a cu_seqlens JSON list, inline: ``[0, 4096, 10000]`` (lengths 4096, 5904);
      - a file path: one length per line, or a cu_seqlens JSON list (``.json`` or text starting ``[``).
    Distributions (``kind="lognormal"`` / ``"empirical"``), sampled by :func:`sample_packs`:
      - ``lognormal:mean=M,sigma=S``: lengths whose *arithmetic mean* is M tokens (what "mean
        document length" means in a data report); mu = ln M − S²/2, so the median is M·exp(−S²/2);
      - ``lognormal:median=M,sigma=S``: median exp(mu) = M (numpy's ``lognormal(mu, sigma)`` with
        mu = ln M); the mean is then M·exp(S²/2). ``sigma`` is the log-space standard deviation;
      - ``file:PATH``: the lengths listed in PATH, drawn uniformly with replacement.

    If ``seq_len`` is given, an explicit pack must sum to it. Bad input raises ``InputError``.
    """
    t = str(text).strip()
    if not t:
        raise InputError(f"documents is empty; {_FORMS}")
    if t.startswith("["):
        try:
            values = json.loads(t)
        except json.JSONDecodeError as e:
            raise InputError(f"documents {t!r} is not a valid JSON list ({e.msg}); "
                             "write cu_seqlens such as [0,4096,10000]") from None
        spec = DocumentSpec("lengths", tuple(_cu_seqlens_to_lengths(values, f"documents {t!r}")), source=t)
    elif _LIST_RE.match(t):
        spec = DocumentSpec("lengths", tuple(parse_int_list(t, "document length")), source=t)
    else:
        head, sep, rest = t.partition(":")
        kind = head.strip().lower()
        if sep and kind == "lognormal":
            return _parse_lognormal(rest, t)
        if sep and kind == "file":
            if not rest.strip():
                raise InputError(f"documents {t!r}: give a path after file:, e.g. file:lengths.txt")
            return DocumentSpec("empirical", tuple(_read_lengths_file(rest.strip())), source=t)
        if os.path.isfile(t):
            spec = DocumentSpec("lengths", tuple(_read_lengths_file(t)), source=t)
        elif sep and re.fullmatch(r"[a-z][a-z0-9_-]+", kind):
            raise InputError(f"documents {t!r}: unknown distribution {head!r}; use lognormal:mean=8K,sigma=1.2 "
                             "or file:lengths.txt")
        elif os.sep in t or "/" in t or re.search(r"\.[A-Za-z]\w*$", t):
            raise InputError(f"document lengths file {t} does not exist; check the path, or give lengths "
                             "such as 4K,60K,1000")
        elif re.fullmatch(r"[\d\s,kKmMgG.]+", t):
            raise InputError(f"documents {t!r} is not a list of positive whole token counts; write e.g. 4K,60K,1000")
        else:
            raise InputError(f"documents {t!r} is not a length list and no such file exists; {_FORMS}")
    if seq_len is not None and sum(spec.lengths) != int(seq_len):
        raise InputError(f"the documents sum to {sum(spec.lengths)} tokens but the sequence length is {seq_len}; "
                         f"drop the sequence length or make the lengths add up to it")
    return spec


def _draw_lengths(spec: DocumentSpec, rng: np.random.Generator, size: int) -> np.ndarray:
    if spec.kind == "lognormal":
        x = rng.lognormal(spec.mu, spec.sigma, size)
        return np.maximum(np.rint(x), 1).astype(np.int64)
    return rng.choice(np.asarray(spec.lengths, dtype=np.int64), size)


def _check_sampling(spec: DocumentSpec, seq_len: int, samples: int) -> None:
    if not spec.is_distribution:
        raise InputError("documents given as explicit lengths describe one pack; give a distribution "
                         "(lognormal:mean=8K,sigma=1.2 or file:lengths.txt) to draw packs from")
    if samples <= 0:
        raise InputError(f"samples must be positive, got {samples}")
    expected_docs = samples * seq_len / max(min(spec.mean_tokens, seq_len), 1.0)
    if expected_docs > 5e7:
        raise InputError(f"{samples} packs of {seq_len} tokens with documents of mean {spec.mean_tokens:.4g} tokens "
                         f"is about {expected_docs:.3g} documents; use fewer samples or longer documents")


def _sample_one(spec: DocumentSpec, seq_len: int, rng: np.random.Generator) -> np.ndarray:
    block = int(seq_len / max(spec.mean_tokens, 1.0) * 1.25) + 16
    drawn = np.zeros(0, dtype=np.int64)
    while True:
        drawn = np.concatenate([drawn, _draw_lengths(spec, rng, block)])
        cum = np.cumsum(drawn)
        if cum[-1] >= seq_len:
            break
    last = int(np.searchsorted(cum, seq_len))  # first document that reaches the end of the pack
    pack = drawn[: last + 1].copy()
    pack[-1] -= int(cum[last]) - seq_len  # cut it at the pack's end; its tail is dropped
    return pack


def sample_packs(spec: DocumentSpec, seq_len: int, samples: int, seed: int = 0) -> list[np.ndarray]:
    """Draw ``samples`` packs of exactly ``seq_len`` tokens from a length distribution.

    Each pack draws document lengths independently until they reach ``seq_len``; the document that
    crosses the end is cut there (its remaining tokens are dropped, as a packing data loader that
    truncates at the sequence boundary does), so the last document of a pack is usually shorter
    than drawn. Pack i depends only on (seed, i): it is the same whatever ``samples`` is.
    """
    seq_len = int(seq_len)
    _check_sampling(spec, seq_len, int(samples))
    children = np.random.SeedSequence(int(seed)).spawn(int(samples))
    return [_sample_one(spec, seq_len, np.random.default_rng(c)) for c in children]


# ================================================================================================
# Closed-form counting helpers
# ================================================================================================
def _cdiv(a, b):
    return -((-a) // b)


def count_band(n, m, delta, lo, hi):
    """``#{(i, j): 0 ≤ i < n, 0 ≤ j < m, lo ≤ delta + i − j ≤ hi}``, elementwise over int64 arrays.

    Queries ``q0 + i`` (n of them) against keys ``k0 + j`` (m of them) with ``delta = q0 − k0``:
    the pairs whose distance q − k lies in the band [lo, hi]. Negative n or m count as 0.
    """
    n = np.maximum(np.asarray(n, dtype=np.int64), 0)
    m = np.maximum(np.asarray(m, dtype=np.int64), 0)
    delta = np.asarray(delta, dtype=np.int64)
    top = np.clip(hi - delta, -m, np.maximum(n - 1, -m))  # i − j ≤ top
    below = np.clip(lo - delta - 1, -m, np.maximum(n - 1, -m))  # minus those with i − j ≤ lo − delta − 1
    return np.where(top > below, _n_le(n, m, top) - _n_le(n, m, below), 0).astype(np.int64)


def _band(mask: Mask, size: int) -> tuple[int, int]:
    """(lo, hi) of the mask, with 'unbounded' sides clamped to ±size (no document is longer)."""
    lo, hi = mask.bounds(size)
    return int(max(lo, -size)), int(min(hi, size))


def _band_pieces(nq, nk, stride, lo, hi):
    """Allowed pairs between queries ``δ·stride + [0, nq)`` and keys ``[0, nk)`` (nq, nk ≤ stride),
    as a function of the distance δ (in strides): a plateau where every pair is allowed and at most
    four partial values on each side, all zero elsewhere.

    Returns a list of ``(first δ, last δ, pairs for each δ in between)`` arrays (elementwise over
    documents; a piece with first > last is empty).
    """
    nq, nk, stride = (np.asarray(x, dtype=np.int64) for x in (nq, nk, stride))
    p0 = _cdiv(lo + nk - 1, stride)       # first δ whose every pair is in the band
    p1 = (hi - nq + 1) // stride          # last such δ
    z0 = _cdiv(lo - nq + 1, stride)       # first δ with any pair in the band
    z1 = (hi + nk - 1) // stride          # last such δ
    full = nq * nk
    empty = full == 0
    pieces = [(np.where(empty, 1, p0), np.where(empty, 0, p1), full)]
    left_hi = np.minimum(p0 - 1, z1)
    right_lo = np.maximum(np.maximum(p1 + 1, p0), z0)
    if np.any((left_hi - z0 >= 4) & ~empty) or np.any((z1 - right_lo >= 4) & ~empty):
        raise AssertionError("band edge wider than four strides")  # impossible for nq, nk ≤ stride
    for k in range(4):
        for d, last in ((z0 + k, left_hi), (right_lo + k, z1)):
            ok = (d <= last) & ~empty
            val = count_band(nq, nk, d * stride, lo, hi)
            pieces.append((np.where(ok, d, 1), np.where(ok, d, 0), val))
    return pieces


def _sum_relu_progression(start, step, count, thr):
    """``Σ_{i<count} max(start + step·i − thr, 0)`` elementwise (step > 0, int64)."""
    i0 = np.clip((thr - start) // step + 1, 0, count)  # first i with start + step·i > thr
    k = count - i0
    return k * (start - thr) + step * ((count - 1) * count // 2 - (i0 - 1) * i0 // 2)


# ================================================================================================
# Layouts
# ================================================================================================
def parse_layout(text: str) -> tuple[str, int | None]:
    """``"zigzag"`` → ("zigzag", None); ``"balanced:16"`` → ("balanced", 16) (16 chunks per rank)."""
    t = str(text).strip().lower()
    name, sep, arg = t.partition(":")
    if name not in LAYOUTS:
        raise InputError(f"unknown layout {text!r}; use one of {', '.join(LAYOUTS)} (balanced:K for K chunks per rank)")
    if not sep:
        return name, None
    if name != "balanced":
        raise InputError(f"layout {text!r} takes no parameter; only balanced:K (K chunks per rank) does")
    try:
        k = int(arg)
    except ValueError:
        k = 0
    if not 1 <= k <= 256:
        raise InputError(f"layout {text!r}: K (chunks per rank) must be a whole number from 1 to 256, e.g. balanced:8")
    return name, k


@dataclass
class Layout:
    """A pack of documents placed on G ranks: which padded positions every rank holds.

    Positions are those of the padded pack (see the module docstring): document d is
    ``[doc_starts[d], doc_starts[d] + doc_lengths[d])``; everything else is padding.

    - chunk layouts (contiguous, zigzag, balanced): the padded pack is cut in chunks of
      ``chunk_tokens``; chunk i belongs to rank ``chunk_owner[i]``.
    - striped: rank r holds positions r, r + G, r + 2G, …
    - zigzag-doc: document d is padded to 2G·``doc_chunk_tokens[d]`` and cut in 2G chunks;
      rank r holds chunks r and 2G−1−r of every document.
    """

    name: str
    world_size: int
    doc_lengths: np.ndarray
    doc_starts: np.ndarray
    padded_len: int
    chunk_tokens: int = 0
    chunk_owner: np.ndarray | None = None
    doc_chunk_tokens: np.ndarray | None = None
    chunks_per_rank: int | None = None
    mask: Mask | None = None  # the mask a work-aware layout balanced for

    @property
    def seq_len(self) -> int:
        """Real tokens of the pack (the documents), without padding."""
        return int(self.doc_lengths.sum())

    @property
    def pad_tokens(self) -> int:
        return self.padded_len - self.seq_len

    @property
    def tokens_per_rank(self) -> int:
        return self.padded_len // self.world_size

    def segments(self, rank: int) -> np.ndarray:
        """Rank's positions as arithmetic progressions, in its local (increasing) order:
        rows ``[start, stride, count]`` (int64, shape (S, 3)); adjacent runs are merged."""
        G, r = self.world_size, int(rank)
        if not 0 <= r < G:
            raise InputError(f"rank {rank} is outside 0..{G - 1}")
        if self.name == "striped":
            return np.array([[r, G, self.padded_len // G]], dtype=np.int64)
        if self.name == "zigzag-doc":
            c = self.doc_chunk_tokens
            starts = np.stack([self.doc_starts + r * c, self.doc_starts + (2 * G - 1 - r) * c], axis=1).ravel()
            counts = np.repeat(c, 2)
        else:
            chunks = np.flatnonzero(self.chunk_owner == r)
            starts = chunks * self.chunk_tokens
            counts = np.full(len(chunks), self.chunk_tokens, dtype=np.int64)
        return _merge_runs(starts, counts)

    def tokens(self, rank: int) -> np.ndarray:
        """Global (padded) positions of rank's tokens, in the rank's local order."""
        seg = self.segments(rank)
        return np.concatenate([s + st * np.arange(n, dtype=np.int64) for s, st, n in seg])

    def real_tokens_per_rank(self) -> np.ndarray:
        """Document (non-padding) tokens each rank holds (int64, shape (G,))."""
        G, n = self.world_size, self.doc_lengths
        if self.name == "striped":
            return np.maximum(_cdiv(self.seq_len - np.arange(G, dtype=np.int64), G), 0)
        if self.name == "zigzag-doc":
            c = self.doc_chunk_tokens[:, None]
            i = np.arange(2 * G, dtype=np.int64)[None, :]
            per_chunk = np.clip(n[:, None] - i * c, 0, c).sum(axis=0)
            return per_chunk[:G] + per_chunk[G:][::-1]
        c = self.chunk_tokens
        per_chunk = np.clip(self.seq_len - np.arange(len(self.chunk_owner), dtype=np.int64) * c, 0, c)
        return np.bincount(self.chunk_owner, weights=per_chunk, minlength=G).astype(np.int64)

    def document_of(self, positions) -> np.ndarray:
        """Document index of each padded position, −1 for padding."""
        p = np.asarray(positions, dtype=np.int64)
        d = np.searchsorted(self.doc_starts, p, side="right") - 1
        dd = np.maximum(d, 0)
        inside = (d >= 0) & (p < self.doc_starts[dd] + self.doc_lengths[dd])
        return np.where(inside, d, -1)

    def describe(self) -> dict:
        d = {"layout": self.name, "world_size": self.world_size, "documents": int(len(self.doc_lengths)),
             "seq_len": self.seq_len, "padded_len": self.padded_len, "pad_tokens": self.pad_tokens,
             "tokens_per_rank": self.tokens_per_rank}
        if self.name == "balanced":
            d["chunks_per_rank"] = self.chunks_per_rank
            d["chunk_tokens"] = self.chunk_tokens
            d["balanced_for_mask"] = str(self.mask)
        return d


def _merge_runs(starts, counts) -> np.ndarray:
    """Merge consecutive stride-1 runs (sorted by start) that touch; drop empty ones."""
    starts = np.asarray(starts, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    keep = counts > 0
    starts, counts = starts[keep], counts[keep]
    if len(starts) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    new = np.ones(len(starts), dtype=bool)
    new[1:] = starts[1:] != starts[:-1] + counts[:-1]
    first = np.flatnonzero(new)
    total = np.add.reduceat(counts, first)
    return np.stack([starts[first], np.ones(len(first), dtype=np.int64), total], axis=1)


def _as_lengths(doc_lengths) -> np.ndarray:
    n = np.asarray(doc_lengths, dtype=np.int64).ravel()
    if n.size == 0:
        raise InputError("a pack needs at least one document")
    if np.any(n <= 0):
        raise InputError(f"document lengths must be positive, got {int(n[n <= 0][0])}")
    return n


def _round_up(x: int, unit: int) -> int:
    return -(-x // unit) * unit


def make_layout(name: str, doc_lengths, world_size: int, mask: Mask | str = "causal",
                chunks_per_rank: int | None = None) -> Layout:
    """Place a pack of documents (``doc_lengths``, in pack order) on ``world_size`` ranks.

    ``name`` is one of :data:`LAYOUTS`, or ``balanced:K``. ``mask`` matters only to ``balanced``,
    which balances the work that mask gives.

    **balanced** cuts the pack (tail-padded to a multiple of K·G) into K·G equal chunks, K per rank
    (default :data:`DEFAULT_BALANCED_CHUNKS`), computes each chunk's exact work (the allowed pairs
    of its queries — a number that does not depend on where the keys live), and deals them by
    greedy LPT with a capacity: chunks in order of decreasing work (ties: earlier chunk first), each
    to the least-loaded rank that holds fewer than K chunks (ties: lowest rank). A rank's work is
    exactly the sum of its chunks' works, so this is multiway number partitioning with equal
    cardinalities; LPT is the standard fast heuristic for it (O(KG log KG), deterministic), it
    keeps token counts equal by construction (ring shards must be equal-sized), and for a single
    causal document with K = 2 it deals chunk i and 2G−1−i to one rank — zigzag, which is exact.
    Its limit is granularity: a chunk heavier than the mean work per rank cannot be split; more
    chunks per rank lower that bound at the cost of more, smaller pieces per rank.
    """
    layout, k_arg = parse_layout(name)
    G = int(world_size)
    if G <= 0:
        raise InputError(f"world size must be positive, got {world_size}")
    n = _as_lengths(doc_lengths)
    T = int(n.sum())
    starts = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
    if layout == "zigzag-doc":
        c = _cdiv(n, 2 * G)  # each document padded to 2G·c ≥ its length
        pstarts = np.concatenate([[0], np.cumsum(2 * G * c)[:-1]]).astype(np.int64)
        return Layout("zigzag-doc", G, n, pstarts, int((2 * G * c).sum()), doc_chunk_tokens=c)
    if layout == "striped":
        return Layout("striped", G, n, starts, _round_up(T, G))
    if layout == "contiguous":
        Tp = _round_up(T, G)
        return Layout("contiguous", G, n, starts, Tp, chunk_tokens=Tp // G, chunk_owner=np.arange(G))
    if layout == "zigzag":
        Tp = _round_up(T, 2 * G)
        owner = np.concatenate([np.arange(G), np.arange(G)[::-1]])
        return Layout("zigzag", G, n, starts, Tp, chunk_tokens=Tp // (2 * G), chunk_owner=owner)
    # balanced
    K = int(chunks_per_rank if chunks_per_rank is not None else k_arg or DEFAULT_BALANCED_CHUNKS)
    if not 1 <= K <= 256:
        raise InputError(f"chunks per rank must be a whole number from 1 to 256, got {K}")
    mask = parse_mask(mask)
    Tp = _round_up(T, K * G)
    c = Tp // (K * G)
    bounds = np.minimum(np.arange(K * G + 1, dtype=np.int64) * c, T)
    works = np.diff(_cumulative_work(bounds, starts, n, *_band(mask, max(Tp, 1))))
    owner = _lpt(works[None, :], G, K)[0]
    return Layout("balanced", G, n, starts, Tp, chunk_tokens=c, chunk_owner=owner, chunks_per_rank=K, mask=mask)


def _lpt(works: np.ndarray, G: int, cap: int) -> np.ndarray:
    """Greedy LPT with capacity, for P problems at once: ``works`` (P, N = cap·G) → owner (P, N)."""
    P, N = works.shape
    order = np.argsort(-works, axis=1, kind="stable")
    load = np.zeros((P, G), dtype=np.int64)
    held = np.zeros((P, G), dtype=np.int64)
    owner = np.empty((P, N), dtype=np.int64)
    rows = np.arange(P)
    big = np.iinfo(np.int64).max
    for t in range(N):
        chunk = order[:, t]
        r = np.where(held < cap, load, big).argmin(axis=1)
        owner[rows, chunk] = r
        load[rows, r] += works[rows, chunk]
        held[rows, r] += 1
    return owner


# ================================================================================================
# Per-rank work (row sums of the pair table), cheap
# ================================================================================================
def _cumulative_work(x, doc_starts, doc_lengths, lo, hi):
    """Allowed pairs of all queries at positions < x (any x, int64 array), in a pack whose documents
    are ``[doc_starts[d], doc_starts[d] + doc_lengths[d])`` (sorted; gaps are padding)."""
    x = np.asarray(x, dtype=np.int64)
    per_doc = count_band(doc_lengths, doc_lengths, 0, lo, hi)
    before = np.concatenate([[0], np.cumsum(per_doc)])
    d = np.searchsorted(doc_starts, x, side="right") - 1
    dd = np.maximum(d, 0)
    y = np.clip(x - doc_starts[dd], 0, doc_lengths[dd])
    return np.where(d >= 0, before[dd] + count_band(y, doc_lengths[dd], 0, lo, hi), 0)


def _zigzag_doc_rank_work(n, G, lo, hi) -> np.ndarray:
    """(D, G): work of rank r's two chunks of each document under zigzag-doc."""
    c = _cdiv(n, 2 * G)
    edges = np.minimum(np.arange(2 * G + 1, dtype=np.int64)[None, :] * c[:, None], n[:, None])
    w = np.diff(count_band(edges, n[:, None], 0, lo, hi), axis=1)
    return w[:, :G] + w[:, G:][:, ::-1]


def _striped_rank_work(starts, n, G, lo, hi) -> np.ndarray:
    """(D, G): work of rank r's queries (positions ≡ r mod G) in each document under striped."""
    assert lo <= 0 <= hi
    lo_d = np.maximum(lo, -(n - 1))[:, None]
    hi_d = np.minimum(hi, n - 1)[:, None]
    nn = n[:, None]
    r = np.arange(G, dtype=np.int64)[None, :]
    x0 = (r - starts[:, None]) % G           # first document-local position on rank r
    cnt = np.maximum(_cdiv(nn - x0, G), 0)   # rank r's queries in the document
    # a query at p sees keys [max(0, p − hi), min(n − 1, p − lo)]:
    # min(p − lo, n − 1) − max(p − hi, 0) + 1 = (p − lo + 1) − relu(p − lo − n + 1) − relu(p − hi)
    s = cnt * x0 + G * cnt * (cnt - 1) // 2 + cnt * (1 - lo_d)
    s -= _sum_relu_progression(x0, G, cnt, nn - 1 + lo_d)
    s -= _sum_relu_progression(x0, G, cnt, hi_d)
    return s


def work_per_rank(layout: Layout, mask: Mask | str = "causal") -> np.ndarray:
    """Allowed pairs of every rank's queries against the whole pack (int64, shape (G,)): the row
    sums of :func:`pair_table`, in O(chunks + documents·G) without any pair of ranks."""
    mask = parse_mask(mask)
    G = layout.world_size
    lo, hi = _band(mask, max(layout.padded_len, 1))
    n, a = layout.doc_lengths, layout.doc_starts
    if layout.name == "striped":
        return _striped_rank_work(a, n, G, lo, hi).sum(axis=0)
    if layout.name == "zigzag-doc":
        return _zigzag_doc_rank_work(n, G, lo, hi).sum(axis=0)
    N = len(layout.chunk_owner)
    bounds = np.arange(N + 1, dtype=np.int64) * layout.chunk_tokens
    w = np.diff(_cumulative_work(bounds, a, n, lo, hi))
    out = np.zeros(G, dtype=np.int64)
    np.add.at(out, layout.chunk_owner, w)
    return out


def imbalance(x) -> float:
    """max / mean of per-rank work; ``x`` is a pair table (G, G) (row sums taken) or a work vector."""
    w = np.asarray(x, dtype=np.float64)
    if w.ndim == 2:
        w = w.sum(axis=1)
    mean = w.mean()
    return float(w.max() / mean) if mean > 0 else 1.0


# ================================================================================================
# Pair tables
# ================================================================================================
def pair_table(layout: Layout, mask: Mask | str = "causal") -> np.ndarray:
    """``pairs[r, s]``: allowed (query, key) pairs between rank r's queries and the K/V shard it
    holds at ring step s, i.e. rank (r − s) mod G's (int64, shape (G, G), exact).

    Allowed means: same document, and the mask's band on the distance inside it. See the module
    docstring for how each layout is counted without a T×T mask.
    """
    mask = parse_mask(mask)
    G = layout.world_size
    lo, hi = _band(mask, max(layout.padded_len, 1))
    if layout.name == "striped":
        by_owner = _pairs_striped(layout.doc_starts, layout.doc_lengths, G, lo, hi)
    elif layout.name == "zigzag-doc":
        by_owner = _pairs_zigzag_doc(layout.doc_lengths, layout.doc_chunk_tokens, G, lo, hi)
    else:
        by_owner = _pairs_chunks(layout.doc_starts, layout.doc_lengths, layout.chunk_tokens,
                                 layout.chunk_owner, G, lo, hi)
    r = np.arange(G)[:, None]
    s = np.arange(G)[None, :]
    return by_owner[r, (r - s) % G]


def _pairs_chunks(a, n, c, owner, G, lo, hi) -> np.ndarray:
    """(G, G) pairs by (query rank, key rank) for a whole-pack chunk layout (see module docstring)."""
    owner = np.asarray(owner, dtype=np.int64)
    N = len(owner)
    out = np.zeros(G * G, dtype=np.int64)

    def points(qchunk, kchunk, val):
        val = np.asarray(val, dtype=np.int64)
        nz = val != 0
        np.add.at(out, owner[qchunk[nz]] * G + owner[kchunk[nz]], val[nz])

    def count(q0, q1, k0, k1):
        return count_band(q1 - q0, k1 - k0, q0 - k0, lo, hi)

    b = a + n
    f = a // c
    l = (b - 1) // c
    one = f == l  # documents inside one chunk
    points(f[one], f[one], count(a[one], b[one], a[one], b[one]))
    a, b, f, l = a[~one], b[~one], f[~one], l[~one]
    head = (a, (f + 1) * c, f)  # partial (or whole) first chunk, as (start, end, chunk)
    tail = (l * c, b, l)        # partial (or whole) last chunk
    for x0, x1, xc in (head, tail):
        for y0, y1, yc in (head, tail):
            points(xc, yc, count(x0, x1, y0, y1))
    # whole chunks strictly between head and tail: the run of each document
    m = l - f - 1
    has = m > 0
    if not np.any(has):
        return out.reshape(G, G)
    doc = np.repeat(np.flatnonzero(has), m[has])
    first = np.repeat(np.cumsum(m[has]) - m[has], m[has])
    j = f[doc] + 1 + (np.arange(len(doc)) - first)  # run chunk
    j0, j1 = j * c, j * c + c
    for x0, x1, xc in (head, tail):
        points(xc[doc], j, count(x0[doc], x1[doc], j0, j1))
        points(j, xc[doc], count(j0, j1, x0[doc], x1[doc]))
    # run × run: whole chunks i, j of one document hold φ(i − j) pairs
    run_lo, run_hi = f[doc] + 1, l[doc] - 1  # run of chunk j's document (inclusive)
    windows = []
    for first_d, last_d, val in _band_pieces(c, c, c, lo, hi):
        first_d, last_d, val = int(first_d), int(last_d), int(val)
        first_d, last_d = max(first_d, -(N - 1)), min(last_d, N - 1)
        if first_d > last_d or val == 0:
            continue
        if last_d - first_d < 2:
            for dlt in range(first_d, last_d + 1):
                k = j - dlt
                ok = (k >= run_lo) & (k <= run_hi)
                points(j[ok], k[ok], np.full(int(ok.sum()), val))
        else:
            windows.append((first_d, last_d, val))
    if windows:
        _add_windows(out, owner, j, run_lo, run_hi, windows, G)
    return out.reshape(G, G)


def _add_windows(out, owner, q, run_lo, run_hi, windows, G, block_cells=1 << 22):
    """For every query chunk q and every (first δ, last δ, value): add value × (number of key
    chunks k of q's run with q − k in [first δ, last δ], per owner rank of k) to
    ``out[owner[q], owner[k]]``. Uses the cumulative count S[x, o] = #{chunks < x owned by o}."""
    N = len(owner)
    per_rank = np.bincount(owner, minlength=G).max()
    dt = np.uint8 if per_rank < 256 else np.int32
    onehot = np.zeros((N + 1, G), dtype=dt)
    onehot[np.arange(1, N + 1), owner] = 1
    S = np.cumsum(onehot, axis=0, dtype=dt)
    order = np.argsort(owner[q], kind="stable")
    q, run_lo, run_hi = q[order], run_lo[order], run_hi[order]
    qr = owner[q]
    acc = np.zeros((G, G), dtype=np.int64)
    step = max(1, block_cells // max(G, 1))
    for s0 in range(0, len(q), step):
        sl = slice(s0, s0 + step)
        qq, rl, rh, rr = q[sl], run_lo[sl], run_hi[sl], qr[sl]
        rows = np.zeros((len(qq), G), dtype=np.int64)
        for first_d, last_d, val in windows:
            k0 = np.maximum(rl, qq - last_d)
            k1 = np.minimum(rh, qq - first_d)
            k1 = np.maximum(k1, k0 - 1)  # empty windows count 0
            rows += val * (S[k1 + 1].astype(np.int64) - S[k0])
        grp = np.flatnonzero(np.r_[True, rr[1:] != rr[:-1]])
        acc[rr[grp]] += np.add.reduceat(rows, grp, axis=0)
    out += acc.ravel()


def _rect(grid, r0, r1, c0, c1, w):
    """Add w on rows [r0, r1) × columns [c0, c1) of a 2-D difference array (elementwise, skips empty)."""
    r0, r1, c0, c1, w = np.broadcast_arrays(*(np.asarray(x, dtype=np.int64) for x in (r0, r1, c0, c1, w)))
    ok = (r0 < r1) & (c0 < c1) & (w != 0)
    r0, r1, c0, c1, w = r0[ok], r1[ok], c0[ok], c1[ok], w[ok]
    np.add.at(grid, (r0, c0), w)
    np.add.at(grid, (r0, c1), -w)
    np.add.at(grid, (r1, c0), -w)
    np.add.at(grid, (r1, c1), w)


def _prefix2(grid) -> np.ndarray:
    return np.cumsum(np.cumsum(grid, axis=0), axis=1)


def _pairs_zigzag_doc(n, c, G, lo, hi) -> np.ndarray:
    """(G, G) pairs by (query rank, key rank) for zigzag-doc.

    All documents share the 2G-chunk grid and the chunk → rank map (chunk i → min(i, 2G−1−i)).
    Document d has v whole chunks, then one partial chunk of ρ tokens (if ρ > 0), then padding
    chunks. Its pairs are summed on the 2G × 2G chunk grid as rectangles in three coordinate
    systems: (query chunk i, key chunk j), (i, δ = i − j ≥ 0) and (j, δ' = j − i ≥ 1).
    """
    N = 2 * G
    v = n // c
    rho = n - v * c
    g_ij = np.zeros((N + 1, N + 1), dtype=np.int64)
    g_id = np.zeros((N + 1, N + 1), dtype=np.int64)  # columns δ = 0 … N−1
    g_jd = np.zeros((N + 1, N + 1), dtype=np.int64)  # columns δ' = 1 … N−1 (δ = −δ')
    zero = np.zeros_like(n)
    # whole × whole: i, j < v at distance δ
    for d0, d1, val in _band_pieces(c, c, c, lo, hi):
        _rect(g_id, zero, v, np.maximum(d0, 0), np.minimum(d1, N - 1) + 1, val)          # δ ≥ 0: i < v
        _rect(g_jd, zero, v, np.maximum(-d1, 1), np.minimum(-d0, N - 1) + 1, val)        # δ < 0: j < v
    part = rho > 0
    vp, rp, cp = v[part], rho[part], c[part]
    # partial query chunk v against whole key chunks j < v (δ = v − j ≥ 1)
    for d0, d1, val in _band_pieces(rp, cp, cp, lo, hi):
        _rect(g_id, vp, vp + 1, np.maximum(d0, 1), np.minimum(d1, vp) + 1, val)
    # whole query chunks i < v against the partial key chunk v (δ = i − v ≤ −1)
    for d0, d1, val in _band_pieces(cp, rp, cp, lo, hi):
        _rect(g_jd, vp, vp + 1, np.maximum(-d1, 1), np.minimum(-d0, vp) + 1, val)
    # partial × partial
    _rect(g_ij, vp, vp + 1, vp, vp + 1, count_band(rp, rp, 0, lo, hi))
    ii = np.arange(N)[:, None]
    jj = np.arange(N)[None, :]
    dist = ii - jj
    chunk = _prefix2(g_ij)[:N, :N]
    p_id = _prefix2(g_id)[:N, :N]
    chunk += np.where(dist >= 0, np.take_along_axis(p_id, np.maximum(dist, 0), axis=1), 0)
    del p_id
    p_jd = _prefix2(g_jd)[:N, :N]
    # entry (i, j) with j > i reads p_jd[j, j − i]: transpose so rows are j
    chunk += np.where(dist < 0, np.take_along_axis(p_jd, np.maximum(-dist.T, 0), axis=1).T, 0)
    return (chunk[:G, :G] + chunk[:G, G:][:, ::-1] + chunk[G:, :G][::-1, :] + chunk[G:, G:][::-1, ::-1])


def _pairs_striped(a, n, G, lo, hi) -> np.ndarray:
    """(G, G) pairs by (query rank r, key rank o) for striped.

    Positions are p = G·u + r. A document [a, b) with a = G·ua + ra, b = G·ub + rb holds on rank r
    the rows u ∈ [ua + [r < ra], ub + [r < rb]). With δ = r − o, the band lo ≤ q − k ≤ hi is
    L(δ) ≤ u − v ≤ H(δ), L = ceil((lo − δ)/G), H = floor((hi − δ)/G), which takes a few values
    (classes) as δ runs over (−G, G). Within a class the count is a function of the four
    indicators x1 = [r < ra], x2 = [r < rb], y1 = [o < ra], y2 = [o < rb]; written as a multilinear
    polynomial in them, each term is c·[r < α]·[o < β]: one anchored rectangle.
    """
    b = a + n
    ua, ra = np.divmod(a, G)
    ub, rb = np.divmod(b, G)
    dl = np.arange(-(G - 1), G, dtype=np.int64)
    L = _cdiv(lo - dl, G)
    H = (hi - dl) // G
    keys = np.stack([L, H], axis=1)
    classes, cls_of_delta = np.unique(keys, axis=0, return_inverse=True)
    cls_of_delta = cls_of_delta.ravel()
    r = np.arange(G)[:, None]
    o = np.arange(G)[None, :]
    cls = cls_of_delta[r - o + G - 1]
    rows = ub - ua
    out = np.zeros((G, G), dtype=np.int64)
    thresholds = {0: np.full_like(ra, G), 1: ra, 2: rb, 3: np.minimum(ra, rb)}
    for k, (Lk, Hk) in enumerate(classes):
        f = np.empty((16, len(n)), dtype=np.int64)
        for mask in range(16):
            x1, x2, y1, y2 = mask & 1, (mask >> 1) & 1, (mask >> 2) & 1, (mask >> 3) & 1
            f[mask] = count_band(rows + x2 - x1, rows + y2 - y1, x1 - y1, int(Lk), int(Hk))
        for bit in range(4):  # Möbius transform: values at the corners → multilinear coefficients
            for mask in range(16):
                if mask & (1 << bit):
                    f[mask] -= f[mask ^ (1 << bit)]
        acc = np.zeros((G + 1, G + 1), dtype=np.int64)
        for mask in range(16):
            alpha = thresholds[mask & 3]
            beta = thresholds[(mask >> 2) & 3]
            np.add.at(acc, (alpha, beta), f[mask])
        # T[r, o] = Σ_{α > r, β > o} acc[α, β]
        suffix = np.cumsum(np.cumsum(acc[::-1, ::-1], axis=0), axis=1)[::-1, ::-1]
        out += np.where(cls == k, suffix[1:, 1:], 0)
    return out


# ================================================================================================
# Many packs: the imbalance distribution
# ================================================================================================
def _rank_work_packs(layout: str, k_arg, packs: list[np.ndarray], G: int, mask: Mask) -> tuple[np.ndarray, np.ndarray]:
    """Per-rank work of every pack, (P, G) int64, and each pack's padded length (P,), for packs
    of one common length (what :func:`sample_packs` draws), vectorised over packs."""
    P = len(packs)
    counts = np.array([len(p) for p in packs])
    n = np.concatenate(packs).astype(np.int64)
    T = int(packs[0].sum())
    pack_of = np.repeat(np.arange(P), counts)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    gstart = np.cumsum(n) - n  # packs laid end to end: pack i is [i·T, (i+1)·T)
    local = gstart - pack_of * T
    if layout == "zigzag-doc":
        lo, hi = _band(mask, 2 * int(n.max()) + 2 * G)
        w = np.add.reduceat(_zigzag_doc_rank_work(n, G, lo, hi), first, axis=0)
        padded = np.add.reduceat(2 * G * _cdiv(n, 2 * G), first)
        return w, padded
    if layout == "striped":
        lo, hi = _band(mask, T + G)
        w = np.add.reduceat(_striped_rank_work(local, n, G, lo, hi), first, axis=0)
        return w, np.full(P, _round_up(T, G))
    K = 1 if layout == "contiguous" else 2 if layout == "zigzag" else int(k_arg or DEFAULT_BALANCED_CHUNKS)
    N = K * G
    Tp = _round_up(T, N)
    c = Tp // N
    lo, hi = _band(mask, Tp)
    edges = np.minimum(np.arange(N + 1, dtype=np.int64) * c, T)[None, :] + (np.arange(P) * T)[:, None]
    works = np.diff(_cumulative_work(edges, gstart, n, lo, hi), axis=1)  # (P, N)
    if layout == "contiguous":
        w = works
    elif layout == "zigzag":
        w = works[:, :G] + works[:, G:][:, ::-1]
    else:
        owner = _lpt(works, G, K)
        w = np.zeros((P, G), dtype=np.int64)
        np.add.at(w, (np.repeat(np.arange(P), N), owner.ravel()), works.ravel())
    return w, np.full(P, Tp)


def imbalance_distribution(packs: list[np.ndarray], world_size: int, mask: Mask | str = "causal",
                           layouts=("contiguous", "striped", "zigzag", "zigzag-doc", "balanced")) -> dict:
    """Imbalance (max/mean per-rank work) of every pack under every layout, summarised.

    ``packs`` must share one length (e.g. from :func:`sample_packs`). Returns
    ``{"packs": P, "layouts": [{"layout", "mean", "p50", "p95", "max", "min", "padded_len_mean"}, …],
    "per_pack": {layout: [imbalance, …]}}``; percentiles interpolate linearly between packs
    (numpy's default).
    """
    if not packs:
        raise InputError("no packs to measure; draw at least one")
    T = int(np.asarray(packs[0]).sum())
    if any(int(np.asarray(p).sum()) != T for p in packs):
        raise InputError("all packs must have the same length to compare them; draw them with one seq_len")
    mask = parse_mask(mask)
    G = int(world_size)
    if G <= 0:
        raise InputError(f"world size must be positive, got {world_size}")
    packs = [_as_lengths(p) for p in packs]
    rows, per_pack = [], {}
    for spec in layouts:
        name, k = parse_layout(spec)
        w, padded = _rank_work_packs(name, k, packs, G, mask)
        wf = w.astype(np.float64)
        mean = wf.mean(axis=1)
        imb = np.where(mean > 0, wf.max(axis=1) / np.where(mean > 0, mean, 1), 1.0)
        label = spec.strip().lower()
        per_pack[label] = imb
        rows.append({"layout": label, "mean": float(imb.mean()), "p50": float(np.percentile(imb, 50)),
                     "p95": float(np.percentile(imb, 95)), "max": float(imb.max()), "min": float(imb.min()),
                     "padded_len_mean": float(padded.mean())})
    return {"packs": len(packs), "world_size": G, "seq_len": T, "mask": str(mask), "layouts": rows,
            "per_pack": per_pack}


# ================================================================================================
# A pack as the ring's plan
# ================================================================================================
EXACT_CALLS_LIMIT = 5e7  # G² blocks × tokens per rank: past it, calls are priced on untrimmed blocks


class DocumentPlan:
    """A pack of documents placed on G ranks, as the ring's plan (the interface of
    :class:`ringsim.schedules.Plan` the builders and the runtime use): every rank's positions,
    the exact ``pairs[r, s]`` (:func:`pair_table`) and every block's kernel call.

    Positions are those of the padded pack (``seq_len`` = ``padded_len``; ``real_seq_len`` the
    documents' tokens). A block's call is its trimmed rectangle with a document-aware mask
    (:func:`ringsim.blocks.block_plan` with each query's document bounds: a padding token sees
    nothing), computed exactly when G²·n ≤ :data:`EXACT_CALLS_LIMIT`; past that, a block is priced
    as its whole n × n rectangle with its exact pairs (kind ``masked``), and only the blocks a
    runtime rank runs are ever trimmed. Varlen kernels run a block's document pieces in one call,
    which is what one call per block stands for."""

    closed_form = False

    def __init__(self, layout_name: str, doc_lengths, world_size: int, mask: Mask | str = "causal"):
        self.mask = parse_mask(mask)
        self.layout = make_layout(layout_name, doc_lengths, world_size, self.mask)
        self.schedule = str(layout_name).strip().lower()
        self.world_size = int(world_size)
        self.seq_len = int(self.layout.padded_len)
        self.real_seq_len = int(self.layout.seq_len)
        self.tokens_per_rank = self.layout.tokens_per_rank
        self._cache: dict = {}

    # ---- partition ------------------------------------------------------------------------------
    def tokens(self, rank: int) -> np.ndarray:
        key = ("tokens", rank)
        if key not in self._cache:
            self._cache[key] = self.layout.tokens(rank)
        return self._cache[key]

    def shard_owner(self, rank: int, step: int) -> int:
        return (rank - step) % self.world_size

    @property
    def permutation(self) -> np.ndarray:
        return np.concatenate([self.tokens(r) for r in range(self.world_size)])

    def shard(self, x: np.ndarray, axis: int = 0) -> list:
        return [np.take(x, self.tokens(r), axis=axis) for r in range(self.world_size)]

    def unshard(self, parts, axis: int = 0) -> np.ndarray:
        cat = np.concatenate(list(parts), axis=axis)
        inv = np.empty_like(self.permutation)
        inv[self.permutation] = np.arange(self.seq_len)
        return np.take(cat, inv, axis=axis)

    def doc_bounds(self, positions) -> tuple[np.ndarray, np.ndarray]:
        """``(start, end)`` of each position's document; a padding position gets an empty range."""
        p = np.asarray(positions, dtype=np.int64)
        d = self.layout.document_of(p)
        dd = np.maximum(d, 0)
        start = np.where(d >= 0, self.layout.doc_starts[dd], p + 1)
        end = np.where(d >= 0, self.layout.doc_starts[dd] + self.layout.doc_lengths[dd], p)
        return start, end

    # ---- work -----------------------------------------------------------------------------------
    @property
    def pairs(self) -> np.ndarray:
        if "pairs" not in self._cache:
            self._cache["pairs"] = pair_table(self.layout, self.mask)
        return self._cache["pairs"]

    def total_pairs(self) -> int:
        return int(self.pairs.sum())

    def work_per_rank(self) -> np.ndarray:
        return self.pairs.sum(axis=1)

    def imbalance(self) -> float:
        return imbalance(self.work_per_rank())

    def block(self, rank: int, step: int):
        """The trimmed call of rank's block at ``step`` (document-aware mask)."""
        from .blocks import block_plan

        lo, hi = self.mask.bounds(self.seq_len)
        q = self.tokens(rank)
        return block_plan(q, self.tokens(self.shard_owner(rank, step)), lo, hi, self.doc_bounds(q))

    @property
    def call_shapes(self):
        """``(CallShapes, ids[r, s])``: one entry per (rank, step) — see the class docstring."""
        if "calls" in self._cache:
            return self._cache["calls"]
        from .blocks import KIND_CODES, CallShapes

        G, n = self.world_size, self.tokens_per_rank
        ids = np.arange(G * G, dtype=np.int64).reshape(G, G)
        block = lambda u: self.block(*divmod(u, G))
        if G * G * n <= EXACT_CALLS_LIMIT:
            shapes = CallShapes([block(u) for u in range(G * G)])
            assert np.array_equal(shapes.pairs, self.pairs.reshape(-1)), "document pairs disagree with the blocks"
        else:
            p = self.pairs.reshape(-1)
            full = np.full(G * G, n, dtype=np.int64)
            zero = np.zeros(G * G, dtype=np.int64)
            kind = np.where(p > 0, KIND_CODES["masked"], KIND_CODES["empty"]).astype(np.int8)
            shapes = CallShapes.from_arrays(zero, np.where(p > 0, full, 0), zero, np.where(p > 0, full, 0), kind, p,
                                            block, exact=False)
        self._cache["calls"] = (shapes, ids)
        return shapes, ids

    def tiles(self, tile_q: int, tile_k: int) -> np.ndarray:
        shapes, ids = self.call_shapes
        t = shapes.tiles(tile_q, tile_k)
        if t is None:
            raise InputError("tile counts of a pack are computed exactly only up to G²·n = "
                             f"{EXACT_CALLS_LIMIT:.0e} token lookups; use --tile none")
        return t[ids]

    def describe(self) -> dict:
        return {"schedule": self.schedule, "world_size": self.world_size, "seq_len": self.seq_len,
                "mask": str(self.mask), "tokens_per_rank": self.tokens_per_rank,
                "documents": self.layout.describe()}


def pack_for(text: str | None, seq_len: int | None, seed: int = 0) -> list | None:
    """The one pack ``--documents`` names for a simulation: its explicit lengths (which must sum to
    ``seq_len`` when that is given), or one pack of ``seq_len`` tokens drawn (``seed``) from its
    distribution; None without ``--documents``."""
    if not text:
        return None
    spec = parse_documents(text, seq_len)
    if spec.is_distribution:
        if seq_len is None:
            raise InputError("--documents draws a pack from a distribution; give --seq-len for the pack's length")
        return [int(x) for x in sample_packs(spec, seq_len, 1, seed)[0]]
    lengths = [int(x) for x in spec.lengths]
    if seq_len is not None and sum(lengths) != seq_len:
        raise InputError(f"--documents lists {sum(lengths)} tokens but --seq-len is {seq_len}; "
                         f"drop --seq-len or give --seq-len {sum(lengths)}")
    return lengths
