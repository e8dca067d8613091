"""The program model: what every rank does, step by step, as data (DESIGN.md §1).

A context-parallel strategy (the ring with a layout, and later all-gather, Ulysses, …) is a
*builder of programs* (:mod:`ringsim.strategies`). A program is read by everything that needs to
know what the ranks do: the engines (:mod:`ringsim.engines`: reference, DES, fast path), the
torch runtime (:mod:`ringsim.runtime.executor`), the critical path, the calibration's replay and
the Kineto mapping. None of them writes the protocol out again; that is what makes a prediction
and a measurement comparable step by step.

Vocabulary
----------
- A **step** is one round of a rank's program: (1) post the messages due at the step's start (one
  batched call: all sends, then all receives), (2) run the step's compute ops in order, (3) post
  the messages due at the compute's end, (4) wait for the messages the step waits for. The next
  step starts when all of that is done. Every rank runs the same sequence of steps (a rank with
  nothing to do at a step computes nothing there); steps are numbered within their phase
  (``fwd``, ``bwd``), which is how timelines label them.
- A **stage** is a run of consecutive steps with the same structure: the same op *slots* and the
  same message groups. Each field of a slot is an array indexed ``[step of the stage, rank]``, so
  a 1024-rank ring is a handful of numpy arrays, not a million objects.
- A **kernel op** (:class:`KernelOp`) is an attention kernel call: a rectangle of the rank's query
  rows against rows of the K/V buffer it holds, ``full``, ``causal`` or ``masked``, forward or
  backward, with its exact pair count — exactly the call the runtime makes. Its geometry comes
  from a table of distinct calls (:class:`ringsim.blocks.CallShapes`).
- A **memory op** (:class:`MemoryOp`) is memory-bound work between kernel calls (the output/LSE
  merge, gradient accumulation, copies) with the bytes it touches.
- A **message** (:class:`Messages`, a group of them per stage) is everything one rank sends to one
  peer in one batched post: its payloads (named buffers, e.g. ``kv``, ``dkv``) are separate
  point-to-point operations of one batch in the runtime, and one *flow* of their summed bytes in
  the simulator. A message starts when its send is posted and, under rendezvous, its receive; the
  post happens at the step's start or its compute's end (``send_at``/``recv_at``), and both ends
  wait for it ``wait_after`` steps later (0: in the step that posted it; a later step may be in a
  later stage, e.g. an outer ring's message waited at the end of an inner ring). A message into a
  buffer made of per-owner *parts* (a collective's buffer: ``kv_all``, ``dkv_all``) says which
  parts it carries (``part``, ``parts``). Collectives (all-gather, reduce-scatter, all-to-all) are
  written out as the messages their algorithm sends, so they contend on the links like any transfer.
- **Head groups** (:class:`HeadGroups`, optional): a Ulysses program shards its work by heads
  inside all-to-all groups; its kernel calls read the *head layout* (the group's tokens, this
  rank's block of heads), and its ``heads:*`` / ``seq:*`` messages convert between layouts.

Payload buffers (what a runtime reads and writes for each name; :mod:`ringsim.runtime.executor`):
``kv`` the K/V buffer a rank holds (its own at a phase's start; a received one replaces it),
``dkv`` the travelling dK/dV accumulator (fp32), ``kv_all``/``dkv_all`` the per-owner parts of an
all-gather / reduce-scatter (received ``dkv_all`` parts are added by the next ``reduce`` op),
``q`` queries travelling instead of K/V, ``part_out`` partial outputs (out and LSE) returned to
the queries' owner, and the all-to-all pieces ``heads:q``, ``heads:kv``, ``heads:dout``
(sequence → head layout: the sender's tokens, the receiver's heads) and ``seq:out``,
``seq:lse``, ``seq:dq``, ``seq:dkv`` (head → sequence layout: the sender's heads, the
receiver's tokens).

Why ops as data (as execution-trace simulators such as ASTRA-sim/Chakra do) rather than one loop
written against a communicator with a torch and a simulated implementation (as SimGrid's SMPI
does): the builder is vectorised over ranks, so a 1024-rank, 1M-token ring is built in
milliseconds, where recording a loop per rank would cost seconds of Python; and most consumers do
not *run* the program but read it (the critical path, the Kineto mapping, the calibration replay,
byte accounting), which data allows and a loop does not. The runtime interprets the same data
with a small vocabulary of ops.

:class:`FlatProgram` is the engines' view: steps numbered globally (``n`` over all stages), every
message in one set of flat arrays, distinct (src, dst) *hops* in a table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Union

import numpy as np

from .blocks import KIND_CODES, CallShapes
from .units import InputError

__all__ = ["KernelOp", "MemoryOp", "Messages", "Stage", "Program", "FlatProgram", "HeadGroups", "POST_AT", "PHASES",
           "compose_programs", "unit_messages"]

POST_AT = ("start", "end")
PHASES = ("fwd", "bwd")


@dataclass(frozen=True)
class KernelOp:
    """One attention kernel call per (step, rank) of a stage (none where ``shape`` is an empty call).

    ``shape[s, r]`` indexes ``shapes``; ``kv_owner[s, r]`` is the rank whose tokens the held K/V
    rows are (−1: not a ring shard); ``kv`` names the payload buffer the call reads keys and values
    from; ``heads`` the query heads the call covers (``None``: all of the model's).

    ``slice_overhead`` is what the implementation spends, beyond the kernel time of the call's
    shape, on a call whose queries are a row slice of the rank's (``q_start > 0``: a zigzag or
    stripe step after the rank's own shard) and on folding its output back into that slice, as a
    fraction of the call's kernel time (0: none). Only the GPU kernel-profile cost model charges it
    (:class:`ringsim.costs.kernels.ProfileCost`); it is a property of the implementation
    (:data:`ringsim.strategies.ring.SLICE_OVERHEAD`), not of the kernel."""

    phase: str
    shapes: CallShapes
    shape: np.ndarray            # [S, G] int64
    kv_owner: np.ndarray | None = None   # [S, G] int64
    kv: str = "kv"
    heads: int | None = None
    slice_overhead: float = 0.0

    def field(self, name: str) -> np.ndarray:
        """``q_start``, ``q_rows``, ``k_start``, ``k_rows``, ``kind`` or ``pairs`` per (step, rank)."""
        return getattr(self.shapes, name)[self.shape]

    @property
    def pairs(self) -> np.ndarray:
        return self.field("pairs")

    @property
    def active(self) -> np.ndarray:
        """Where a call runs (its kind is not ``empty``)."""
        return self.field("kind") != KIND_CODES["empty"]

    @property
    def sliced(self) -> np.ndarray:
        """Where the call's queries are a row slice of the rank's, not starting at its first row (the
        calls ``slice_overhead`` is charged on)."""
        return self.field("q_start") > 0

    def tiles(self, tile_q: int, tile_k: int) -> np.ndarray | None:
        t = self.shapes.tiles(tile_q, tile_k)
        return None if t is None else t[self.shape]


@dataclass(frozen=True)
class MemoryOp:
    """Memory-bound work per (step, rank): ``name``, the bytes it reads and writes, and the kernel
    launches it takes (0 bytes: nothing runs). Names a runtime acts on: ``merge`` (fold the last
    call's output and LSE into the running ones), ``accumulate`` (add the last backward call's dQ
    rows and dK/dV columns), ``gather`` (lay the ``kv_all`` parts out in token order for the calls),
    ``scatter`` (split the token-order dK/dV into ``dkv_all`` parts), ``reduce`` (add the received
    ``dkv_all`` parts), ``merge_partials`` (fold the returned ``part_out`` partials into the output);
    ``copy`` is priced only."""

    name: str
    bytes: np.ndarray            # [S, G] float64
    launches: np.ndarray | int = 1


Op = Union[KernelOp, MemoryOp]


@dataclass(frozen=True)
class Messages:
    """A group of messages, ``C`` per step of the stage: message c of step s goes from
    ``src[s, c]`` to ``dst[s, c]`` with ``bytes[s, c]`` bytes of the buffers ``payloads[s]``.
    Arrays of one row are the same at every step (a ring's hops are)."""

    src: np.ndarray              # [1 or S, C] int64
    dst: np.ndarray              # [1 or S, C] int64
    bytes: np.ndarray            # [1 or S, 1 or C] float64
    payloads: tuple              # per step (or one entry for all): tuple of payload names
    send_at: str = "start"
    recv_at: str = "start"
    wait_after: int = 0
    part: np.ndarray | None = None   # [1 or S, 1 or C] int64: first part carried (buffers of parts)
    parts: np.ndarray | int = 1      # [1 or S, 1 or C] or int: how many consecutive parts


@dataclass(frozen=True)
class HeadGroups:
    """Ulysses sharding of a program's work by heads: ``ranks[g, u]`` is member u of all-to-all
    group g (every rank in exactly one group of ``degree`` U members).

    In the *sequence layout* a rank holds its own tokens (the plan's) with every head. In the
    *head layout* member u holds every token of its group — member 0's, then member 1's, … each
    in the member's local order — for query heads ``[u·H/U, (u+1)·H/U)`` and the K/V heads those
    use: K/V heads ``[u·H_kv/U, (u+1)·H_kv/U)`` when U ≤ H_kv, else the one K/V head its query
    block shares (replicated on U/H_kv members). The program's kernel calls read the head layout
    (their ``heads`` is H/U); its ``heads:*`` messages move a rank's tokens of member u's heads to
    member u, and ``seq:*`` messages move them back."""

    ranks: np.ndarray            # [groups, U] int64

    @property
    def degree(self) -> int:
        return int(np.shape(self.ranks)[1])

    def member(self, rank: int) -> tuple[int, int]:
        """``(group, index in the group)`` of a rank."""
        g, u = np.argwhere(np.asarray(self.ranks) == rank)[0]
        return int(g), int(u)

    def kv_heads_of(self, u: int, heads: int, kv_heads: int) -> range:
        """The K/V heads member u's block of query heads uses (see the class docstring)."""
        U = self.degree
        if U <= kv_heads:
            return range(u * kv_heads // U, (u + 1) * kv_heads // U)
        h = (u * heads // U) // (heads // kv_heads)
        return range(h, h + 1)


@dataclass(frozen=True)
class Stage:
    """``n_steps`` steps of one phase, numbered ``first_step …`` within it, with the same op slots
    (run in order at every step) and message groups."""

    phase: str
    first_step: int
    n_steps: int
    ops: tuple = ()
    messages: tuple = ()
    name: str = ""


def _rows(a, S: int, C: int | None = None, dtype=np.int64) -> np.ndarray:
    a = np.asarray(a, dtype=dtype)
    if a.ndim == 1:
        a = a[None, :]
    return np.broadcast_to(a, (S, a.shape[1] if C is None else C))


@dataclass
class Program:
    """What every rank of a ``world_size``-rank group does, as stages (see the module docstring).

    ``strategy`` is the spec that built it; ``meta`` describes the workload and layout; ``plan`` is
    the token partition of the queries (the runtime takes every rank's positions from it);
    ``head_groups`` the Ulysses groups when the calls work on a share of the heads."""

    world_size: int
    stages: list
    strategy: str = ""
    meta: dict = field(default_factory=dict)
    plan: object = None
    head_groups: HeadGroups | None = None

    def __post_init__(self):
        self.validate()

    # ---- checks -------------------------------------------------------------------------------
    def validate(self) -> None:
        """Structural invariants: shapes, ranks in range, no message to oneself, waits inside the
        program. (Builders put everything one rank posts to one peer at once in one message; two
        messages of one hop in one step are allowed — e.g. K/V at a step's start and dK/dV at its
        end — and keep the fast path off.)"""
        G = self.world_size
        if G < 1:
            raise InputError(f"a program needs at least one rank, got {G}")
        if self.head_groups is not None:
            hg = np.asarray(self.head_groups.ranks)
            if hg.ndim != 2 or hg.size != G or not np.array_equal(np.sort(hg.reshape(-1)), np.arange(G)):
                raise ValueError(f"head groups {hg.shape} must hold every rank 0..{G - 1} once")
        first_n = np.cumsum([0] + [st.n_steps for st in self.stages])
        total = int(first_n[-1])
        for k, st in enumerate(self.stages):
            S = st.n_steps
            where = f"stage {k} ({st.name or st.phase})"
            if st.phase not in PHASES or S < 1:
                raise ValueError(f"{where}: phase {st.phase!r}, {S} steps")
            for op in st.ops:
                arr = op.shape if isinstance(op, KernelOp) else op.bytes
                if np.shape(arr) != (S, G):
                    raise ValueError(f"{where}: op array shaped {np.shape(arr)}, expected ({S}, {G})")
            for g in st.messages:
                src, dst = _rows(g.src, S), _rows(g.dst, S)
                if src.shape != dst.shape:
                    raise ValueError(f"{where}: src {src.shape} and dst {dst.shape} differ")
                if src.size and (src.min() < 0 or src.max() >= G or dst.min() < 0 or dst.max() >= G):
                    raise ValueError(f"{where}: message ranks outside 0..{G - 1}")
                if np.any(src == dst):
                    raise ValueError(f"{where}: a message from a rank to itself")
                if g.send_at not in POST_AT or g.recv_at not in POST_AT:
                    raise ValueError(f"{where}: post times {g.send_at}/{g.recv_at}")
                if g.wait_after < 0 or first_n[k] + S - 1 + g.wait_after >= total:
                    raise ValueError(f"{where}: wait_after {g.wait_after} waits past the program's last step")
                if len(g.payloads) not in (1, S):
                    raise ValueError(f"{where}: {len(g.payloads)} payload entries for {S} steps")
                if g.part is not None:
                    part = np.broadcast_to(np.asarray(g.part, dtype=np.int64), src.shape)
                    cnt = np.broadcast_to(np.asarray(g.parts, dtype=np.int64), src.shape)
                    if part.size and (part.min() < 0 or cnt.min() < 1):
                        raise ValueError(f"{where}: message parts must be ≥ 0 and counts ≥ 1")

    # ---- views ------------------------------------------------------------------------------
    @cached_property
    def flat(self) -> "FlatProgram":
        return FlatProgram(self)

    @property
    def n_steps(self) -> int:
        return sum(st.n_steps for st in self.stages)

    def phases(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(st.phase for st in self.stages))

    def bytes_by_step(self) -> dict[tuple[str, int], float]:
        """Bytes sent at each (phase, step), summed over ranks (every message's bytes once)."""
        out: dict[tuple[str, int], float] = {}
        for st in self.stages:
            for g in st.messages:
                S = st.n_steps
                b = np.broadcast_to(np.asarray(g.bytes, dtype=np.float64), (S, _rows(g.src, S).shape[1]))
                for s in range(S):
                    key = (st.phase, st.first_step + s)
                    out[key] = out.get(key, 0.0) + float(b[s].sum())
        return out

    def rank_steps(self, rank: int):
        """The program of one rank, step by step, for executors that run one rank (the runtime):
        yields ``RankStep`` records in order."""
        for k, st in enumerate(self.stages):
            S = st.n_steps
            groups = []
            for g in st.messages:
                src, dst = _rows(g.src, S), _rows(g.dst, S)
                b = np.broadcast_to(np.asarray(g.bytes, dtype=np.float64), src.shape)
                part = (np.broadcast_to(np.asarray(g.part, dtype=np.int64), src.shape) if g.part is not None
                        else np.full(src.shape, -1, dtype=np.int64))
                cnt = np.broadcast_to(np.asarray(g.parts, dtype=np.int64), src.shape)
                groups.append((g, src, dst, b, part, cnt))
            for s in range(S):
                sends, recvs = [], []
                for g, src, dst, b, part, cnt in groups:
                    pay = g.payloads[s if len(g.payloads) > 1 else 0]
                    for c in np.flatnonzero(src[s] == rank):
                        sends.append(Post(int(dst[s, c]), tuple(pay), float(b[s, c]), g.send_at, g.wait_after,
                                          int(part[s, c]), int(cnt[s, c])))
                    for c in np.flatnonzero(dst[s] == rank):
                        recvs.append(Post(int(src[s, c]), tuple(pay), float(b[s, c]), g.recv_at, g.wait_after,
                                          int(part[s, c]), int(cnt[s, c])))
                yield RankStep(st, k, s, st.first_step + s, sends, recvs)


@dataclass(frozen=True)
class Post:
    """One side of a message as one rank sees it: the peer, the payload buffers, the bytes, when
    it is posted (``start``/``end`` of the step), how many steps later it is waited for, and for
    buffers of parts the first part and the count (``part`` −1: the whole buffer)."""

    peer: int
    payloads: tuple
    bytes: float
    at: str
    wait_after: int
    part: int = -1
    parts: int = 1


@dataclass(frozen=True)
class RankStep:
    stage: Stage
    stage_index: int
    index: int          # step within the stage
    step: int           # step within the phase (the timeline's label)
    sends: list
    recvs: list

    @property
    def phase(self) -> str:
        return self.stage.phase


class FlatProgram:
    """The engines' view of a :class:`Program`: global step numbers ``n`` (``N`` in all), every
    message in flat arrays sorted by the step that posts it, distinct hops in a table.

    Per step: ``step_phase[n]``, ``step_label[n]`` (the step within its phase), ``step_stage[n]``,
    ``has_compute[n]`` (the step has op slots: its ranks get a compute row). Per message m:
    ``src``, ``dst``, ``bytes``, ``post_step`` (n), ``wait_step`` (n), ``send_end``/``recv_end``
    (posted at the compute's end), ``hop`` (index into ``hop_src``/``hop_dst``); ``duplicate_hops``:
    some step has two messages between the same two ranks; ``step_distinct_ends[n]``: no rank
    sends two of step n's messages and none receives two.
    ``step_msgs[n]:step_msgs[n + 1]`` are the messages posted at step n. Per (step, rank):
    ``pairs``, ``work_pairs`` (pairs × the share of the model's heads the calls cover, from
    ``program.meta["heads"]``: what FLOPs scale with), ``kv_owner`` (−1 where no ring shard is
    held) — the timeline's compute rows."""

    def __init__(self, program: Program):
        G = program.world_size
        self.world_size = G
        stages = program.stages
        self.N = N = program.n_steps
        self.step_phase = [st.phase for st in stages for _ in range(st.n_steps)]
        self.step_label = np.array([st.first_step + s for st in stages for s in range(st.n_steps)], dtype=np.int64)
        self.step_stage = np.array([k for k, st in enumerate(stages) for _ in range(st.n_steps)], dtype=np.int64)
        self.has_compute = np.array([bool(st.ops) for st in stages for _ in range(st.n_steps)], dtype=bool)
        self.stage_first = np.cumsum([0] + [st.n_steps for st in stages])
        pairs = np.zeros((N, G), dtype=np.int64)
        work = np.zeros((N, G))
        owner = np.full((N, G), -1, dtype=np.int64)
        heads = program.meta.get("heads")
        for k, st in enumerate(stages):
            n0 = int(self.stage_first[k])
            for op in st.ops:
                if isinstance(op, KernelOp):
                    pairs[n0:n0 + st.n_steps] += op.pairs
                    frac = op.heads / heads if (op.heads and heads) else 1.0
                    work[n0:n0 + st.n_steps] += op.pairs * frac
                    if op.kv_owner is not None:
                        sl = owner[n0:n0 + st.n_steps]
                        np.copyto(sl, op.kv_owner, where=sl < 0)
        self.pairs, self.kv_owner = pairs, owner
        # pairs weighted by the share of the model's heads each call covers: what FLOPs scale with
        self.work_pairs = work
        # messages, step-major (within a step: group by group, column by column); hops deduplicated
        # per group on the rows it has (a ring's hops are one row, the same at every step)
        parts = {k: [] for k in ("src", "dst", "bytes", "post", "wait", "send_end", "recv_end", "hop")}
        hop_keys: dict[int, int] = {}
        counts = np.zeros(N, dtype=np.int64)
        dup_hops, stage_hops, stage_src, stage_dst = False, [], [], []
        distinct = np.ones(N, dtype=bool)
        for k, st in enumerate(stages):
            if not st.messages:
                continue
            n0 = int(self.stage_first[k])
            S = st.n_steps
            cols = {key: [] for key in parts}
            for g in st.messages:
                raw_s, raw_d = np.atleast_2d(np.asarray(g.src, dtype=np.int64)), np.atleast_2d(np.asarray(g.dst, dtype=np.int64))
                rows = max(raw_s.shape[0], raw_d.shape[0])
                src, dst = _rows(raw_s, rows), _rows(raw_d, rows)
                C = src.shape[1]
                uk, inv = np.unique(src * G + dst, return_inverse=True)
                ids = np.array([hop_keys.setdefault(int(x), len(hop_keys)) for x in uk], dtype=np.int64)
                hop = ids[inv.reshape(src.shape)]
                stage_hops.append(hop)
                stage_src.append(src)
                stage_dst.append(dst)
                steps = np.arange(n0, n0 + S, dtype=np.int64)[:, None]
                cols["src"].append(np.broadcast_to(src, (S, C)))
                cols["dst"].append(np.broadcast_to(dst, (S, C)))
                cols["hop"].append(np.broadcast_to(hop, (S, C)))
                cols["bytes"].append(np.broadcast_to(np.asarray(g.bytes, dtype=np.float64), (S, C)))
                cols["post"].append(np.broadcast_to(steps, (S, C)))
                cols["wait"].append(np.broadcast_to(steps + g.wait_after, (S, C)))
                cols["send_end"].append(np.full((S, C), g.send_at == "end"))
                cols["recv_end"].append(np.full((S, C), g.recv_at == "end"))
                counts[n0:n0 + S] += C
            # two messages between the same ranks in one step (the fast path's recurrence cannot
            # tell them apart): checked on each stage's distinct hop rows, not on every message
            rows_h = max(h.shape[0] for h in stage_hops)
            hh = np.sort(np.concatenate([_rows(h, rows_h) for h in stage_hops], axis=1), axis=1)
            dup_hops = dup_hops or bool((hh[:, 1:] == hh[:, :-1]).any())
            stage_hops.clear()
            # per step: every message of the step has its own sender, and its own receiver
            for ends in (stage_src, stage_dst):
                rows_e = max(x.shape[0] for x in ends)
                ee = np.sort(np.concatenate([_rows(x, rows_e) for x in ends], axis=1), axis=1)
                ok = ~(ee[:, 1:] == ee[:, :-1]).any(axis=1)
                distinct[n0:n0 + S] &= ok if rows_e == S else bool(ok.all())
                ends.clear()
            for key in parts:  # one copy per key (a single group's broadcast view is copied once)
                c = cols[key]
                parts[key].append(np.ascontiguousarray(c[0]).reshape(-1) if len(c) == 1
                                  else np.concatenate(c, axis=1).reshape(-1))

        def cat(key, dt):
            p = parts[key]
            if not p:
                return np.zeros(0, dtype=dt)
            return (p[0] if len(p) == 1 else np.concatenate(p)).astype(dt, copy=False)
        self.src, self.dst = cat("src", np.int64), cat("dst", np.int64)
        self.bytes = cat("bytes", np.float64)
        self.post_step, self.wait_step = cat("post", np.int64), cat("wait", np.int64)
        self.send_end, self.recv_end = cat("send_end", bool), cat("recv_end", bool)
        self.hop = cat("hop", np.int64)
        self.M = len(self.src)
        self.step_msgs = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        hk = np.array(sorted(hop_keys, key=hop_keys.get), dtype=np.int64)
        self.hop_src, self.hop_dst = hk // G, hk % G
        self.wait_after_zero = bool(np.all(self.wait_step == self.post_step))
        self.duplicate_hops = dup_hops  # some step has two messages between the same two ranks
        self.step_distinct_ends = distinct  # per step: no rank sends two of its messages, none receives two

    def phase_index(self) -> list[int]:
        """Per step, the index of its phase in the order phases first appear."""
        order = list(dict.fromkeys(self.step_phase))
        return [order.index(p) for p in self.step_phase]


def compose_programs(units: list, rank_maps: list, world_size: int, strategy: str = "", meta: dict | None = None
                     ) -> "Program":
    """One program over ``world_size`` ranks running several programs side by side: unit ``u``'s
    rank ``i`` becomes rank ``rank_maps[u][i]`` (every global rank used at most once; ranks no
    unit uses do nothing). Think of seating several tables of card players in one hall: each table
    plays its own game, but they all share the hall's corridors (the topology's links), so their
    transfers contend where routes meet.

    The units must have the same structure: the same stages (phase, first step, steps) with the
    same op slots (kernel or memory, same phase and buffer) — e.g. every CP group of a job runs the
    same strategy. Message groups of the units are concatenated column-wise where their payloads,
    post times and waits agree (unit 0's columns first), else kept as separate groups; within a
    step the composed program lists unit 0's messages, then unit 1's, … of each group, so the
    messages of one unit keep their relative order (what :func:`unit_messages` relies on).
    Kernel ops keep their call tables (merged when the units have different ones), ``kv_owner`` is
    mapped to global ranks. The protocol logic stays in the units' builders: this only relabels."""
    if not units:
        raise ValueError("compose_programs needs at least one program")
    maps = [np.asarray(m, dtype=np.int64) for m in rank_maps]
    if len(maps) != len(units):
        raise ValueError(f"{len(units)} programs but {len(maps)} rank maps")
    used = np.concatenate(maps)
    for u, (p, m) in enumerate(zip(units, maps)):
        if m.shape != (p.world_size,):
            raise ValueError(f"unit {u}: rank map of {m.shape} for {p.world_size} ranks")
    if used.size and (used.min() < 0 or used.max() >= world_size):
        raise ValueError(f"rank maps name ranks outside 0..{world_size - 1}")
    if len(np.unique(used)) != len(used):
        raise ValueError("two units share a rank; give each unit its own ranks")
    ref = units[0]
    sig = lambda p: [(st.phase, st.first_step, st.n_steps,
                      tuple((type(op).__name__, getattr(op, "phase", None), getattr(op, "kv", None),
                             getattr(op, "name", None), getattr(op, "heads", None),
                             getattr(op, "slice_overhead", None)) for op in st.ops))
                     for st in p.stages]
    want = sig(ref)
    for u, p in enumerate(units[1:], 1):
        if sig(p) != want:
            raise ValueError(f"unit {u} has a different stage structure from unit 0; only programs of the same "
                             "structure compose")
    G = world_size
    stages = []
    for k, st in enumerate(ref.stages):
        S = st.n_steps
        ops = []
        for j, op in enumerate(st.ops):
            slot = [p.stages[k].ops[j] for p in units]
            if isinstance(op, KernelOp):
                ops.append(_compose_kernel(slot, maps, S, G))
            else:
                b = np.zeros((S, G))
                for o, m in zip(slot, maps):
                    b[:, m] = o.bytes
                scalar = {o.launches for o in slot if np.ndim(o.launches) == 0}
                if len(scalar) == 1 and all(np.ndim(o.launches) == 0 for o in slot):
                    launches = scalar.pop()
                else:
                    launches = np.zeros((S, G))
                    for o, m in zip(slot, maps):
                        launches[:, m] = np.broadcast_to(np.asarray(o.launches, dtype=np.float64), (S, len(m)))
                ops.append(MemoryOp(op.name, b, launches))
        groups: list = []
        keys: list = []
        for p, m in zip(units, maps):
            for gi, g in enumerate(p.stages[k].messages):
                raw_s = np.atleast_2d(np.asarray(g.src, dtype=np.int64))
                raw_d = np.atleast_2d(np.asarray(g.dst, dtype=np.int64))
                rows = max(raw_s.shape[0], raw_d.shape[0])
                C = raw_s.shape[1]
                src, dst = m[_rows(raw_s, rows)], m[_rows(raw_d, rows)]
                b = np.asarray(g.bytes, dtype=np.float64)
                b = np.broadcast_to(b if b.ndim == 2 else b.reshape(1, -1), (max(rows, b.shape[0] if b.ndim == 2
                                                                                   else 1), C))
                key = (gi, tuple(g.payloads), g.send_at, g.recv_at, g.wait_after)
                if key in keys:
                    i = keys.index(key)
                    groups[i].append((src, dst, b))
                else:
                    keys.append(key)
                    groups.append([(src, dst, b)])
        messages = []
        order = sorted(range(len(keys)), key=lambda i: keys[i][0])  # by group index: a unit's groups stay in order
        keys, groups = [keys[i] for i in order], [groups[i] for i in order]
        for key, parts in zip(keys, groups):
            rows = max(max(x.shape[0] for x in part) for part in parts)
            cat = lambda i: np.concatenate([np.broadcast_to(part[i], (rows, part[i].shape[1])) for part in parts],
                                           axis=1)
            messages.append(Messages(cat(0), cat(1), cat(2), key[1], key[2], key[3], key[4]))
        stages.append(Stage(st.phase, st.first_step, S, tuple(ops), tuple(messages), st.name))
    m = dict(ref.meta)
    m.update(meta or {})
    plan = ref.plan if all(p.plan is ref.plan for p in units) else None  # every unit's partition, if one
    return Program(G, stages, strategy=strategy or ref.strategy, meta=m, plan=plan)


def _compose_kernel(slot: list, maps: list, S: int, G: int) -> KernelOp:
    """One kernel slot over all ranks: each unit's call indices scattered to its ranks (call
    tables merged when the units have different ones; ranks of no unit get an empty call)."""
    from .blocks import BlockPlan

    tables: list = []
    offsets = []
    for o in slot:
        for t, off in tables:
            if t is o.shapes:
                offsets.append(off)
                break
        else:
            off = sum(len(t) for t, _ in tables)
            tables.append((o.shapes, off))
            offsets.append(off)
    blocks = [b for t, _ in tables for b in t.blocks]
    empty = next((i for i, b in enumerate(blocks) if b.kind == "empty"), None)
    covered = sum(len(m) for m in maps)
    if empty is None and covered < G:
        blocks.append(BlockPlan("empty"))
        empty = len(blocks) - 1
    shapes = tables[0][0] if len(tables) == 1 and len(blocks) == len(tables[0][0]) else CallShapes(blocks)
    shape = np.full((S, G), empty if empty is not None else 0, dtype=np.int64)
    owner = None
    if any(o.kv_owner is not None for o in slot):
        owner = np.full((S, G), -1, dtype=np.int64)
    for o, m, off in zip(slot, maps, offsets):
        shape[:, m] = o.shape + off
        if owner is not None and o.kv_owner is not None:
            ko = np.asarray(o.kv_owner, dtype=np.int64)
            owner[:, m] = np.where(ko >= 0, m[np.clip(ko, 0, None)], -1)
    o0 = slot[0]
    return KernelOp(o0.phase, shapes, shape, owner, o0.kv, o0.heads, o0.slice_overhead)


def unit_messages(flat: "FlatProgram", rank_map) -> np.ndarray:
    """Indices of the composed program's messages sent by a unit's ranks, in the composed order:
    the unit's own messages in its own flat order (see :func:`compose_programs`)."""
    mine = np.zeros(flat.world_size, dtype=bool)
    mine[np.asarray(rank_map, dtype=np.int64)] = True
    return np.flatnonzero(mine[flat.src])
