"""Import PyTorch-profiler (Kineto) traces of ring-attention runs: map every event onto the program.

A run profiled with ``torch.profiler`` leaves one Chrome-trace JSON per rank (``.json`` or
``.json.gz``; ``ringsim run --profile DIR`` writes ``DIR/rank{r}.pt.trace.json``). Each carries
``distributedInfo`` = ``{rank, world_size, backend}``. The run configuration the profiler does not
record (schedule, length, mask, heads, kv_heads, head_dim, …) comes from the caller
(``--run-config KEY=VALUE``) or from the ``ringsim`` metadata that ``ringsim run --profile``
embeds in each file. From it the importer rebuilds the **program** the run executed
(:mod:`ringsim.strategies`): that is the ground truth, and every event is matched to one of its
ops by order and kind, rank by rank — never by a formula such as "the k-th kernel is step k mod G".

**What is read** (per rank; one *level* per rank):

- *GPU level* (the trace has attention kernels): CUDA kernels. Attention kernels are names
  matching flash / fmha / attention / sdpa / attn_fwd / attn_bwd (FA2's ``flash_fwd_kernel``/
  ``flash_bwd_*``, FA3's ``FlashAttn*Sm90``, memory-efficient ``fmha_cutlassF/B``, cuDNN's
  ``*sdpa*fprop/bprop``, Triton's ``attn_fwd``, CK's ``Fmha*``, …) except cache, quantisation and
  rotary kernels; ``bwd``/``backward``/``grad``/``cutlassB``/``bprop``
  mean backward. Helper kernels of one call (``dot_do_o``/``preprocess`` before the main kernel,
  ``convert_dq``/``postprocess``/``combine`` after it) are folded into that call, and so are
  attention kernels (or ops) that follow each other with nothing merged in between — at most
  their inputs prepared (``aten::contiguous``): a call run in parts, e.g. a bottom-right causal
  block wider than tall as a full and a causal part.
  NCCL kernels are transfers when point to point — ``ncclDevKernel_SendRecv`` (NCCL ≥ 2.19),
  ``ncclKernel_SendRecv_*``, ``ncclKernel_*Send*``/``*Recv*`` — unless the CPU op that launched
  them is a collective (an all-to-all made of send/recv kernels is a collective); bytes come from
  the kernel's or the launching ``record_param_comms``' ``In msg nelems`` × dtype. Elementwise,
  reduce and copy kernels (and memcpy/memset) are *memory work*; other kernels (GEMMs, …) end a
  merge. The order is the CPU launch order (``correlation`` → the runtime's launch call), times
  are the device's.
- *CPU level* (no attention kernel: a CPU/gloo run, or a GPU run profiled without CUDA activity):
  CPU ops of the thread that runs the attention ops. Attention calls are the outermost ``aten::``
  ops whose names hold ``attention`` (``aten::_scaled_dot_product_flash_attention_for_cpu`` and its
  ``_backward``, the one the runtime calls) or ``flash_attn``; transfers are ``c10d::send`` /
  ``c10d::recv_`` (or ``record_param_comms`` naming ``send``/``recv``) — peer from the op's
  arguments, bytes from its tensor shapes × the dtype of the ``gloo:send``/``gloo:recv`` range
  inside it, and the end from that range (gloo ends it when the transfer completes); other
  ``aten::`` ops (view and allocation ops aside) are memory work; matmul-like ones,
  ``aten::contiguous`` (a block's slice made dense for the next call) and any other op or range
  (an autograd node, a collective, a user's ``record_function``) end a merge.
- ``c10d`` collectives, barriers and collective NCCL kernels are not part of the ring: counted
  for the summary, never mapped. ``ringsim/<phase>/step <s>`` ranges (``ringsim run --profile``
  marks every step with ``torch.profiler.record_function``) never decide the mapping or a time:
  they only cross-check the mapping.

**How it is matched** (per rank):

1. *Calls.* The rank's attention calls, in launch order, form runs of one phase. The program
   says which steps of a phase have a call on this rank (steps whose block is empty — a
   contiguous ring's rank r after step r — have none); a run of n calls is n/m occurrences of
   the phase's m calls (iterations, or layers of a model), the k-th call of an occurrence being
   its k-th active step. A run whose length is not a multiple of m is not guessed at: its calls
   stay unmapped and the report says which rank, when, how many found, how many expected.
2. *Transfers.* Between two mapped calls the program says which posts happen (the end posts of
   the first call's step, both posts of the steps without a call between them, the start posts
   of the second call's step). The observed transfer events there are matched to those posts in
   order, per direction — one event per tensor (gloo), per message, or per batch (an NCCL
   SendRecv kernel is both sides of one batched post) — whichever count agrees; if none does,
   the gap is reported, not guessed. Peers and bytes the trace recorded are checked against the
   program (a difference is reported); those it did not record come from the program.
3. *Merges.* The memory work launched after a call and before the next call, transfer or other
   kernel/op is that step's merge (``merge`` row) — except work after the wait: when the step's
   transfers complete in an idle gap that follows some of that memory work, the work after the
   gap ran after the wait (a gap right after the call is the thread descheduled, since a call's
   merge runs before its step's wait). The same code runs after every call of a step, so a cut
   seen at least twice and in most occurrences showing one (over all ranks, per phase, step and
   number of memory ops) applies to every occurrence, and a lone one to none: a thread
   descheduled mid-merge while the transfer completes looks the same, and is not a wait.
4. *Rows.* Per step: a ``compute`` row per call (first kernel's start to the last kernel's end,
   exact ``pairs``/``flops`` from the program; a step without posts starts with the rank's first
   activity after the previous step ended — the slices and copies that prepare its call
   included, as ``ringsim run`` records them), a ``merge`` row per call, a zero-length
   ``compute`` row where the program has compute ops but no call for this rank (once the step's
   posts are issued), ``send``/``recv`` rows per message (from the start of the step's batched
   post to the completion), and a ``wait`` row from the end of the step's work to the completion
   of the transfers it waits for (CPU level: to the thread's first op after it, when it resumed)
   — every row ``ringsim run`` records, zero-length where nothing was seen, so that the k-th row
   of a kind belongs to the k-th occurrence.

A profile that starts or stops inside an occurrence keeps, before its first and after its last
mapped call, only the posts its events can account for. Both forms of one run see the same
events but stamp them at different points — the profiler at the ops, ``ringsim run`` at the
Python around them — so the profiler's posts start some µs later and its completions and merge
ends some µs earlier (9, 20 and 18 µs at the median on a 2-core CPU host).

Without a run configuration there is no program: nothing is mapped (rows carry step −1) and the
summary says so. **Time**: every file's ``ts`` (µs, plus ``baseTimeNanoseconds``) goes on one
origin, the earliest imported row of all ranks; the ranks' clocks are assumed to agree (one host,
or hosts synchronised by NTP/PTP).

:func:`summarize` reads any Kineto traces — other models, other programs — and says what it found
(ranks, attention calls, point-to-point and collective transfers, time spans) and why they cannot
be validated when they are not a ring-attention run.
"""
from __future__ import annotations

import bisect
import gzip
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .timeline import Timeline
from .units import InputError

__all__ = ["is_kineto_trace", "load_trace", "expand_trace_paths", "read_rank", "import_kineto", "summarize",
           "attention_phase", "attention_role", "nccl_directions", "DTYPE_SIZES", "MARKER_FORMAT"]

MARKER_FORMAT = "ringsim/{phase}/step {step}"
_MARKER_RE = re.compile(r"^ringsim/(fwd|bwd)/step (-?\d+)$")
_ATTN_RE = re.compile(r"flash|fmha|attention|sdpa|attn_fwd|attn_bwd|sage_fwd|sage_bwd|PrefillWith|DecodeWith", re.I)
_NOT_ATTN_RE = re.compile(r"reshape_and_cache|cache_kernel|quantiz|kv_indices|rotary|rope|copy_blocks|swap_blocks|"
                          r"merge_attn_states|memcpy|memset", re.I)
_BWD_RE = re.compile(r"bwd|backward|grad|cutlassB|bprop", re.I)
_PRE_AUX_RE = re.compile(r"dot_do_o|preprocess|clear_dkvaccum|dq_accum_zero", re.I)
_POST_AUX_RE = re.compile(r"convert_dq|convert|postprocess|combine", re.I)
_NCCL_RE = re.compile(r"^(void )?nccl(Dev)?Kernel_", re.I)
_MEM_KERNEL_RE = re.compile(r"elementwise|vectorized|reduce|unrolled|copy|fill|CatArray|index|scatter|gather|"
                            r"triton_(poi|red|per)|softmax|where|cast|sum|add|mul|exp|sigmoid|log", re.I)
_MATMUL_OPS = re.compile(r"^aten::(mm|matmul|bmm|addmm|baddbmm|linear|conv|_convolution|einsum)", re.I)
# a slice made dense for the next call: where a merge ends (CPU level)
_PREP_OPS = {"aten::contiguous"}
# view and allocation ops: no memory work, never a token
_TRIVIAL_OPS = {"aten::empty", "aten::empty_like", "aten::empty_strided", "aten::as_strided", "aten::slice",
                "aten::select", "aten::view", "aten::reshape", "aten::_reshape_alias", "aten::transpose",
                "aten::t", "aten::permute", "aten::unsqueeze", "aten::squeeze", "aten::alias", "aten::detach",
                "aten::expand", "aten::lift_fresh", "aten::resolve_conj", "aten::resolve_neg", "aten::item",
                "aten::_local_scalar_dense", "aten::is_nonzero", "aten::set_", "aten::resize_", "aten::unbind",
                "aten::chunk", "aten::split", "aten::narrow", "aten::view_as", "aten::result_type", "detach",
                # a conversion that copies shows as its aten::_to_copy / aten::copy_ children
                "aten::to"}
_P2P_C10D = {"c10d::send": "send", "c10d::recv_": "recv", "c10d::recv_any_source_": "recv"}
DTYPE_SIZES = {"float": 4, "float32": 4, "c10::float": 4, "half": 2, "float16": 2, "c10::half": 2,
               "bfloat16": 2, "c10::bfloat16": 2, "double": 8, "float64": 8, "int": 4, "int32": 4,
               "long": 8, "int64": 8, "long int": 8, "char": 1, "byte": 1, "uint8": 1, "int8": 1,
               "unsigned char": 1, "signed char": 1, "bool": 1, "float8_e4m3fn": 1, "float8_e5m2": 1}
_P2P_COLLECTIVE_NAMES = {"send", "recv", "recvanysource", "batchisendirecv", "coalesced", "p2p"}


# ---- name rules ---------------------------------------------------------------------------------
def attention_phase(name: str) -> str | None:
    """``"fwd"``/``"bwd"`` for an attention kernel name, ``None`` for any other kernel."""
    if not _ATTN_RE.search(name) or _NOT_ATTN_RE.search(name):
        return None
    return "bwd" if _BWD_RE.search(name) else "fwd"


def attention_role(name: str) -> str:
    """``"pre"`` / ``"post"`` for helper kernels that belong to the next / previous main kernel of a
    call (FA2's ``dot_do_o`` and ``convert_dq``, FA3's pre/postprocess, split-KV ``combine``), else
    ``"main"``."""
    if _PRE_AUX_RE.search(name):
        return "pre"
    if _POST_AUX_RE.search(name):
        return "post"
    return "main"


def nccl_directions(name: str) -> tuple[str, ...]:
    """Which ring rows an NCCL kernel stands for: ``("send", "recv")`` for a fused SendRecv,
    ``("send",)``/``("recv",)`` for one-sided kernels, ``()`` for collectives and non-NCCL names."""
    if not _NCCL_RE.search(name):
        return ()
    low = name.lower()
    if "sendrecv" in low:
        return ("send", "recv")
    if "send" in low:
        return ("send",)
    if "recv" in low:
        return ("recv",)
    return ()


def _nccl_collective(name: str) -> str:
    m = re.search(r"Kernel_([A-Za-z]+)", name)
    return m.group(1) if m else name


def _cpu_attention_phase(name: str) -> str | None:
    low = name.lower()
    if not ((low.startswith("aten::") and "attention" in low) or "flash_attn" in low):
        return None
    return "bwd" if "backward" in low or "bwd" in low else "fwd"


def _norm_collective(name: str) -> str:
    n = str(name).lower()
    for p in ("c10d::", "nccl:", "gloo:"):
        if n.startswith(p):
            n = n[len(p):]
    return n.strip("_").replace("_", "")


# ---- loading -------------------------------------------------------------------------------------
def is_kineto_trace(data) -> bool:
    """A PyTorch-profiler trace of a distributed run: a JSON object with ``distributedInfo``."""
    return isinstance(data, dict) and isinstance(data.get("distributedInfo"), dict)


def load_trace(path: str) -> dict:
    """Load one profiler trace (``.json`` or ``.json.gz``); any problem is one InputError line."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"trace file {path} does not exist; check the path")
    if os.path.isdir(path):
        raise InputError(f"{path} is a directory; give trace files (or use a command that takes a directory)")
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, EOFError, gzip.BadGzipFile, OSError) as e:
        raise InputError(f"{path} is not a readable trace ({type(e).__name__}); give a PyTorch-profiler "
                         "Chrome-trace JSON (.json or .json.gz)") from None
    if isinstance(data, dict) and "nodes" in data and "traceEvents" not in data:
        raise InputError(f"{path} is a PyTorch execution trace (ExecutionTraceObserver's nodes), not a profiler "
                         "trace; give the Kineto trace torch.profiler exports (export_chrome_trace)")
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise InputError(f"{path} has no 'traceEvents' list; it is not a Chrome trace from torch.profiler")
    return data


def expand_trace_paths(paths) -> list[str]:
    """Paths with every directory replaced by its profiler traces: ``*.pt.trace.json[.gz]`` if it
    has any, else every ``*.json``/``*.json.gz`` in it (sorted by name)."""
    out = []
    for p in paths:
        p = os.fspath(p)
        if not os.path.isdir(p):
            out.append(p)
            continue
        names = sorted(os.listdir(p))
        pick = [n for n in names if re.search(r"\.pt\.trace\.json(\.gz)?$", n)]
        if not pick:
            pick = [n for n in names if n.endswith((".json", ".json.gz"))]
        if not pick:
            raise InputError(f"directory {p} holds no trace files (*.json, *.json.gz); give the directory "
                             "`ringsim run --profile` wrote, or the files")
        out += [os.path.join(p, n) for n in pick]
    return out


# ---- one rank's events ---------------------------------------------------------------------------
@dataclass
class Tok:
    """One observed thing on a rank's timeline, in launch order (``key``, µs); times in µs."""

    kind: str                 # call | comm | mem | prep | other
    key: float
    start: float
    end: float
    phase: str = ""
    names: tuple = ()
    direction: str = ""       # comm: send | recv | sendrecv
    bytes: float | None = None
    peer: int | None = None
    marker: tuple | None = None  # (phase, step) of the ringsim marker around its launch
    posted: float | None = None  # comm: when posting it returned (the CPU op's end; µs)


@dataclass
class RankTrace:
    """What :func:`read_rank` found in one rank's file."""

    rank: int | None
    world_size: int | None
    backend: str
    level: str                # "gpu" (kernels) | "cpu" (CPU ops) | "none"
    devices: list
    toks: list
    origin: str = "trace"
    attention_names: Counter = field(default_factory=Counter)
    p2p_names: Counter = field(default_factory=Counter)
    collectives: Counter = field(default_factory=Counter)
    n_events: int = 0
    span_us: tuple = (0.0, 0.0)
    markers: int = 0
    embedded: dict | None = None
    kernels: int = 0
    activity: list = field(default_factory=list)  # CPU level: sorted starts of the thread's ops (µs)
    base_us: float = 0.0
    p2p_unlinked: int = 0     # point-to-point kernels whose launch is not in the trace (origin unknown)


def _num(x, default=None):
    try:
        v = float(x)
        return v if np.isfinite(v) else default
    except (TypeError, ValueError):
        return default


def _dtype_size(name) -> int | None:
    if name is None:
        return None
    return DTYPE_SIZES.get(str(name).strip().lower().replace("c10::", ""), DTYPE_SIZES.get(str(name).strip().lower()))


def _args_bytes(args: dict) -> float | None:
    """Bytes of a transfer from profiler args: ``bytes`` or ``In/Out msg nelems`` × dtype size."""
    for key in ("bytes", "Bytes", "msg_bytes", "size_bytes"):
        v = _num(args.get(key))
        if v is not None:
            return v
    n = None
    for key in ("In msg nelems", "Out msg nelems", "in_msg_nelems", "out_msg_nelems", "nelems"):
        n = _num(args.get(key))
        if n is not None:
            break
    size = _dtype_size(args.get("dtype"))
    if n is None or size is None:
        return None
    return n * size


def _dims_numel(dims) -> int | None:
    """Elements of the first tensor (or tensor list) argument of an op from its ``Input Dims``."""
    if not isinstance(dims, list) or not dims:
        return None
    first = dims[0]
    if not isinstance(first, list):
        return None
    shapes = first if first and all(isinstance(x, list) for x in first) else [first]
    total = 0
    for s in shapes:
        if not all(isinstance(v, (int, float)) for v in s):
            return None
        total += int(np.prod(s)) if s else 1
    return total


class _Nest:
    """The X events of one thread as properly nested intervals: who encloses a time."""

    def __init__(self, evs: list):
        self.evs = sorted(evs, key=lambda e: (e[0], -e[1]))
        self.starts = [e[0] for e in self.evs]
        self.parent = []
        stack: list[int] = []
        for j, (s, e, _) in enumerate(self.evs):
            while stack and self.evs[stack[-1]][1] < s:
                stack.pop()
            self.parent.append(stack[-1] if stack else -1)
            stack.append(j)

    def enclosing(self, t: float) -> list:
        """Events containing time ``t``, innermost first (their payloads)."""
        j = bisect.bisect_right(self.starts, t) - 1
        out = []
        while j >= 0:
            s, e, payload = self.evs[j]
            if s <= t <= e:
                out.append(payload)
            j = self.parent[j]
        return out

    def ancestors(self, j: int) -> list:
        out = []
        j = self.parent[j]
        while j >= 0:
            out.append(self.evs[j][2])
            j = self.parent[j]
        return out


def _marker_of(payloads, base_us: float = 0.0) -> tuple | None:
    """``(phase, step, start µs)`` of the innermost ``ringsim/<phase>/step <s>`` range among
    ``payloads`` (events), or None."""
    for ev in payloads:
        m = _MARKER_RE.match(str(ev.get("name", "")))
        if m:
            return (m.group(1), int(m.group(2)), (_num(ev.get("ts"), 0.0) or 0.0) + base_us)
    return None


def read_rank(data: dict, origin: str = "trace") -> RankTrace:
    """Classify one rank's profiler events (see the module docstring) into launch-ordered tokens."""
    info = data.get("distributedInfo") if isinstance(data.get("distributedInfo"), dict) else {}
    rank = _num(info.get("rank"))
    world = _num(info.get("world_size"))
    rank = int(rank) if rank is not None else None
    world = int(world) if world is not None else None
    base_us = (_num(data.get("baseTimeNanoseconds"), 0.0) or 0.0) / 1e3
    devices = [str(d.get("name")) for d in (data.get("deviceProperties") or []) if isinstance(d, dict)]
    embedded = data.get("ringsim") if isinstance(data.get("ringsim"), dict) else None
    xs = []
    for ev in data.get("traceEvents", []):
        if not isinstance(ev, dict) or ev.get("ph") != "X":
            continue
        ts = _num(ev.get("ts"))
        if ts is None:
            continue
        dur = max(_num(ev.get("dur"), 0.0) or 0.0, 0.0)
        xs.append((ts + base_us, ts + base_us + dur, ev))
    rt = RankTrace(rank, world, str(info.get("backend") or ""), "none", devices, [], origin, embedded=embedded,
                   base_us=base_us)
    rt.n_events = len(xs)
    if xs:
        rt.span_us = (min(x[0] for x in xs), max(x[1] for x in xs))
    cat = lambda ev: str(ev.get("cat", "")).lower()
    # CPU-side ops per (pid, tid), nested
    # (communication ranges such as gloo:send outlive the op that opened them: kept apart, so
    # that they do not swallow the ops that follow)
    threads: dict = {}
    ranges: dict = {}
    for s, e, ev in xs:
        if cat(ev) in ("cpu_op", "user_annotation", "python_function", "cpu_instant_event", "operator", ""):
            key = (ev.get("pid"), ev.get("tid"))
            if _is_comm_range(str(ev.get("name", ""))):
                ranges.setdefault(key, []).append((s, e, ev))
            else:
                threads.setdefault(key, []).append((s, e, ev))
    nests = {k: _Nest(v) for k, v in threads.items()}
    range_nests = {k: _Nest(v) for k, v in ranges.items()}
    rt.markers = sum(1 for s, e, ev in xs if _MARKER_RE.match(str(ev.get("name", ""))))
    kernels = [(s, e, ev) for s, e, ev in xs if cat(ev) in ("kernel", "gpu_memcpy", "gpu_memset")]
    rt.kernels = sum(1 for k in kernels if cat(k[2]) == "kernel")
    if rt.kernels:
        # the device's view: attention, NCCL (point to point or collective) and memory kernels
        _read_gpu(rt, xs, kernels, nests, range_nests)
        if any(t.kind == "call" for t in rt.toks):
            rt.level = "gpu"
        else:  # no attention kernel: attention ops on the CPU side, or nothing ring-like at all
            gpu = (rt.toks, rt.attention_names, rt.p2p_names, rt.collectives)
            rt.toks, rt.attention_names, rt.p2p_names, rt.collectives = [], Counter(), Counter(), Counter()
            _read_cpu(rt, nests, range_nests)
            if not any(t.kind == "call" for t in rt.toks):
                rt.toks, rt.attention_names, rt.p2p_names, rt.collectives = gpu
                rt.level = "none"
    else:
        _read_cpu(rt, nests, range_nests)
        # collectives on the CPU side: outermost c10d collective or record_param_comms ops
        for nest in nests.values():
            for j, (s, e, ev) in enumerate(nest.evs):
                name = str(ev.get("name", ""))
                coll = None
                if name.startswith("c10d::") and name not in _P2P_C10D:
                    coll = name
                elif name == "record_param_comms":
                    cn = (ev.get("args") or {}).get("Collective name")
                    if cn is not None and _norm_collective(cn) not in _P2P_COLLECTIVE_NAMES:
                        coll = str(cn)
                if coll and not any(str(a.get("name", "")).startswith("c10d::") or
                                    a.get("name") == "record_param_comms" for a in nest.ancestors(j)):
                    rt.collectives[_norm_collective(coll)] += 1
    rt.toks.sort(key=lambda t: t.key)
    return rt


def _is_comm_range(name: str) -> bool:
    return name.startswith(("gloo:", "nccl:"))


def _read_gpu(rt: RankTrace, xs, kernels, nests, range_nests) -> None:
    launches = {}
    for s, e, ev in xs:
        if str(ev.get("cat", "")).lower() in ("cuda_runtime", "cuda_driver", "runtime"):
            c = (ev.get("args") or {}).get("correlation")
            if c is not None:
                launches[c] = (s, (ev.get("pid"), ev.get("tid")))
    toks = []
    for s, e, ev in kernels:
        name = str(ev.get("name", ""))
        args = ev.get("args") or {}
        key, enc = s, []
        lk = launches.get(args.get("correlation"))
        if lk is not None:
            key = lk[0]
            for ns in (nests, range_nests):
                if lk[1] in ns:
                    enc += ns[lk[1]].enclosing(key)
        if str(ev.get("cat", "")).lower() != "kernel":
            toks.append(Tok("mem", key, s, e, names=(name,)))
            continue
        phase = attention_phase(name)
        if phase is not None:
            rt.attention_names[name] += 1
            toks.append(Tok("call", key, s, e, phase, (name,), marker=_marker_of(enc, rt.base_us)))
            continue
        if _NCCL_RE.search(name):
            coll = None
            if "Collective name" in args and _norm_collective(args["Collective name"]) not in _P2P_COLLECTIVE_NAMES:
                coll = str(args["Collective name"])
            for op in enc:
                on = str(op.get("name", ""))
                oa = op.get("args") or {}
                if on == "record_param_comms" and "Collective name" in oa:
                    if _norm_collective(oa["Collective name"]) not in _P2P_COLLECTIVE_NAMES:
                        coll = coll or str(oa["Collective name"])
                elif (on.startswith("c10d::") and on not in _P2P_C10D) or \
                        (on.startswith("nccl:") and _norm_collective(on) not in _P2P_COLLECTIVE_NAMES):
                    coll = coll or on
            dirs = nccl_directions(name)
            if coll is not None or not dirs:
                rt.collectives[_norm_collective(coll) if coll else _nccl_collective(name).lower()] += 1
                toks.append(Tok("other", key, s, e, names=(name,)))
                continue
            nbytes = _args_bytes(args)
            if nbytes is None:
                for op in enc:
                    if op.get("name") == "record_param_comms":
                        nbytes = _args_bytes(op.get("args") or {})
                        if nbytes is not None:
                            break
            rt.p2p_names[name] += 1
            rt.p2p_unlinked += lk is None
            toks.append(Tok("comm", key, s, e, names=(name,), direction="sendrecv" if len(dirs) == 2 else dirs[0],
                            bytes=nbytes, marker=_marker_of(enc, rt.base_us)))
            continue
        toks.append(Tok("mem" if _MEM_KERNEL_RE.search(name) else "other", key, s, e, names=(name,)))
    rt.toks = _fold_calls(sorted(toks, key=lambda t: t.key))


def _fold_calls(toks: list) -> list:
    """Fold helper kernels into their call — a pre-helper into the next main kernel of its phase, a
    post-helper into the previous call, memory work between them included — and attention kernels
    launched directly after one another (nothing between them) into one call."""
    out: list[Tok] = []
    pending: Tok | None = None  # a pre-helper waiting for its main kernel
    pending_mem: list[Tok] = []

    def flush():
        nonlocal pending, pending_mem
        if pending is not None:
            out.append(pending)
            out.extend(pending_mem)
        pending, pending_mem = None, []

    for t in toks:
        if t.kind != "call":
            if pending is not None and t.kind == "mem":
                pending_mem.append(t)
                continue
            flush()
            out.append(t)
            continue
        role = attention_role(t.names[0])
        if role == "pre":
            flush()
            pending = t
            continue
        if pending is not None and pending.phase == t.phase:
            merged = pending
            for m in pending_mem:
                merged = _absorb(merged, m)
            t = _absorb(merged, t)
            pending, pending_mem = None, []
        flush()
        prev = _last_call_run(out, "mem" if role == "post" else "prep")
        if prev is not None and prev.phase == t.phase:
            i = len(out) - 1 - out[::-1].index(prev)
            merged = prev
            for m in out[i + 1:]:
                merged = _absorb(merged, m)
            out[i:] = [_absorb(merged, t)]
            continue
        out.append(t)
    flush()
    return out


def _last_call_run(out: list, between: str):
    """The last call if only ``between`` tokens follow it: memory work (``"mem"``: a post-helper
    still joins its call) or input preparation (``"prep"``: a call in parts — two kernels for one
    block, nothing merged between them)."""
    for t in reversed(out):
        if t.kind == "call":
            return t
        if t.kind != between:
            return None
    return None


def _absorb(a: Tok, b: Tok) -> Tok:
    """Call ``a`` extended by ``b`` (a kernel of the same call, or memory work inside it)."""
    names = a.names + b.names if b.kind == "call" else a.names
    return Tok("call", a.key, min(a.start, b.start), max(a.end, b.end), a.phase or b.phase, names,
               marker=a.marker or b.marker)


def _read_cpu(rt: RankTrace, nests, range_nests) -> None:
    # the thread that runs the attention ops (else the one with the most point-to-point ops)
    def score(item):
        _, nest = item
        names = [str(ev.get("name", "")) for _, _, ev in nest.evs]
        return (sum(1 for n in names if _cpu_attention_phase(n)), sum(1 for n in names if n in _P2P_C10D))
    if not nests:
        return
    key, nest = max(nests.items(), key=score)
    if score((key, nest)) == (0, 0):
        return
    rt.level = "cpu"
    cat_of = lambda ev: str(ev.get("cat", "")).lower()
    annotations = []  # gloo:/nccl: send/recv ranges anywhere in the process: transfer completion
    for (pid, _), other in range_nests.items():
        if pid != key[0]:
            continue
        for s, e, ev in other.evs:
            n = str(ev.get("name", ""))
            if n in ("gloo:send", "gloo:recv", "nccl:send", "nccl:recv"):
                annotations.append((s, e, ev))
    annotations.sort(key=lambda a: a[0])
    ann_starts = [a[0] for a in annotations]
    used = set()
    toks = []
    activity = []
    for j, (s, e, ev) in enumerate(nest.evs):
        name = str(ev.get("name", ""))
        anc = nest.ancestors(j)
        anc_names = [str(a.get("name", "")) for a in anc]
        inside_call = any(_cpu_attention_phase(n) for n in anc_names)
        inside_comm = any(n in _P2P_C10D or n == "record_param_comms" or n.startswith("c10d::") for n in anc_names)
        phase = _cpu_attention_phase(name)
        marker = _marker_of(anc, rt.base_us)
        if phase is not None:
            if not inside_call:
                rt.attention_names[name] += 1
                toks.append(Tok("call", s, s, e, phase, (name,), marker=marker))
            continue
        args = ev.get("args") or {}
        direction = _P2P_C10D.get(name)
        if direction is None and name == "record_param_comms":
            cn = _norm_collective(args.get("Collective name", ""))
            direction = "send" if cn == "send" else "recv" if cn in ("recv", "recvanysource") else None
        if direction is not None:
            if inside_comm or inside_call:
                continue
            peer, nbytes, end = None, None, e
            conc = args.get("Concrete Inputs")
            if name in _P2P_C10D and isinstance(conc, list) and len(conc) > 2:
                p = _num(conc[2])
                peer = int(p) if p is not None else None
            numel = _dims_numel(args.get("Input Dims"))
            size = _dtype_size(args.get("dtype"))
            nbytes = _args_bytes(args) if name == "record_param_comms" else None
            # the gloo:/nccl: range the op opened: its dtype, and (gloo) the transfer's completion
            i = bisect.bisect_left(ann_starts, s)
            while i < len(annotations) and annotations[i][0] <= e:
                a = annotations[i]
                if i not in used and str(a[2].get("name", "")).endswith(direction):
                    used.add(i)
                    at = (a[2].get("args") or {}).get("Input type")
                    if size is None and isinstance(at, list) and at:
                        size = _dtype_size(at[0])
                    if str(a[2].get("name", "")).startswith("gloo:"):
                        end = max(end, a[1])
                    break
                i += 1
            if nbytes is None and numel is not None and size is not None:
                nbytes = float(numel * size)
            rt.p2p_names[name] += 1
            toks.append(Tok("comm", s, s, end, names=(name,), direction=direction, bytes=nbytes, peer=peer,
                            marker=marker, posted=e))
            continue
        if not (inside_call or inside_comm) and cat_of(ev) == "cpu_op":
            activity.append(s)
        if inside_call or inside_comm or name in _TRIVIAL_OPS or _MARKER_RE.match(name) or \
                any(n in _PREP_OPS for n in anc_names):  # a preparation's copies are part of it
            continue
        if not name.startswith("aten::"):
            # an autograd node, a collective, a user range: where a merge ends (at its start)
            if cat_of(ev) in ("cpu_op", "user_annotation"):
                toks.append(Tok("other", s, s, s, names=(name,), marker=marker))
            continue
        kind = "other" if _MATMUL_OPS.match(name) else "prep" if name in _PREP_OPS else "mem"
        toks.append(Tok(kind, s, s, e, names=(name,), marker=marker))
    # folding on the CPU: attention ops directly after one another (nothing between) are one call
    rt.toks = _fold_calls(sorted(toks, key=lambda t: t.key))
    rt.activity = sorted(activity)


# ---- the program's view of one rank ------------------------------------------------------------------
@dataclass
class ExpCall:
    """One kernel call of a step as the program has it: its exact pairs, the K/V owner, the share
    of the model's heads it covers, and whether it runs (an empty block is no call)."""

    pairs: float
    owner: int
    share: float
    active: bool


@dataclass
class ExpStep:
    """One step of one rank's program: its kernel calls (program order) and posts at its start
    and end."""

    phase: str
    step: int
    calls: list                # [ExpCall], one per kernel op of the step
    has_ops: bool
    start_posts: list          # [(side, Post)], sends first, in program order
    end_posts: list

    @property
    def active(self) -> list[int]:
        """Indices of the calls that run."""
        return [i for i, c in enumerate(self.calls) if c.active]


def expected_steps(program, rank: int) -> dict:
    """phase → the rank's :class:`ExpStep` list, in program order."""
    from .blocks import KIND_CODES
    from .program import KernelOp

    heads = program.meta.get("heads")
    out: dict[str, list] = {}
    for rs in program.rank_steps(rank):
        calls = []
        for op in rs.stage.ops:
            if isinstance(op, KernelOp):
                u = int(op.shape[rs.index, rank])
                owner = int(op.kv_owner[rs.index, rank]) if op.kv_owner is not None else -1
                share = op.heads / heads if (op.heads and heads) else 1.0
                calls.append(ExpCall(float(op.shapes.pairs[u]), owner, share,
                                     int(op.shapes.kind[u]) != KIND_CODES["empty"]))
        posts = {"start": [], "end": []}
        for side, lst in (("send", rs.sends), ("recv", rs.recvs)):
            for p in lst:
                posts[p.at].append((side, p))
        for at in posts:  # one batch: all sends, then all receives
            posts[at].sort(key=lambda sp: sp[0] != "send")
        out.setdefault(rs.phase, []).append(ExpStep(rs.phase, rs.step, calls, bool(rs.stage.ops), posts["start"],
                                                    posts["end"]))
    return out


# ---- matching --------------------------------------------------------------------------------------
@dataclass
class _Occ:
    """One occurrence (iteration, or layer) of a phase on one rank, with its mapped calls."""

    phase: str
    index: int
    steps: list
    calls: dict = field(default_factory=dict)   # (step, call index) → Tok
    comms: dict = field(default_factory=dict)   # (step, at) → list of (side, Post, start, end, bytes, peer)
    merges: dict = field(default_factory=dict)  # (step, call index) → (start, end)
    posted: dict = field(default_factory=dict)  # (step, at) → when posting the batch returned (µs)
    pending: dict = field(default_factory=dict)  # (step, call index) → (memory ops after it, where a wait cut them)


def _problem(rank, what, **kw) -> dict:
    return {"rank": rank, "what": what, **kw}


def _match_posts(toks: list, slots: list, rank: int, notes: list | None = None) -> tuple[list, dict | None]:
    """Match the observed transfer events of one gap to the program's post slots (see the module
    docstring). Returns ``([(slot, side, post, start, end, bytes, peer, event)], problem or
    None)``; ``notes`` receives the size differences of fused batch kernels."""
    if not slots and not toks:
        return [], None
    exp = [(sl, side, p) for sl in slots for side, p in sl[3]]
    where = [(sl[0].phase, sl[1], sl[2]) for sl in slots]
    steps = sorted({(w[0], w[1]) for w in where})
    desc = ", ".join(f"{ph} step {s}" for ph, s in steps) or "no step"
    n_s = sum(1 for _, side, _ in exp if side == "send")
    n_r = len(exp) - n_s
    obs_s = [t for t in toks if t.direction == "send"]
    obs_r = [t for t in toks if t.direction == "recv"]
    obs_b = [t for t in toks if t.direction == "sendrecv"]
    out = []
    if obs_b and not obs_s and not obs_r:
        if len(obs_b) != len(slots):
            return [], _problem(rank, "transfers", steps=desc, expected=f"{len(slots)} batched post(s)",
                                found=f"{len(obs_b)} SendRecv kernel(s)")
        for t, sl in zip(obs_b, slots):
            sent = sum(p.bytes for side, p in sl[3] if side == "send")
            if notes is not None and t.bytes is not None and sent > 0 and abs(t.bytes - sent) > 0.005 * sent:
                notes.append(_problem(rank, "bytes", phase=sl[0].phase, step=sl[1], at_us=t.start,
                                      expected=f"a batch sending {sent:.0f} bytes",
                                      found=f"a SendRecv kernel of {t.bytes:.0f} bytes"))
            for side, p in sl[3]:
                out.append((sl, side, p, t.start, t.end, None, None, t))
        return out, None
    if obs_b:
        return [], _problem(rank, "transfers", steps=desc, expected=f"{n_s} send(s), {n_r} receive(s)",
                            found=f"{len(obs_b)} fused and {len(obs_s) + len(obs_r)} one-sided event(s)")
    for side, obs in (("send", obs_s), ("recv", obs_r)):
        mine = [(sl, p) for sl, sd, p in exp if sd == side]
        per_tensor = sum(len(p.payloads) for _, p in mine)
        if len(obs) == per_tensor:
            widths = [len(p.payloads) for _, p in mine]
        elif len(obs) == len(mine):
            widths = [1] * len(mine)
        else:
            return [], _problem(rank, "transfers", steps=desc,
                                expected=f"{len(mine)} {side}(s) of {per_tensor} tensor(s)",
                                found=f"{len(obs)} {side} event(s)")
        i = 0
        for (sl, p), w in zip(mine, widths):
            evs = obs[i:i + w]
            i += w
            b = sum(t.bytes for t in evs) if all(t.bytes is not None for t in evs) else None
            peers = {t.peer for t in evs}
            peer = peers.pop() if len(peers) == 1 else None
            out.append((sl, side, p, min(t.start for t in evs), max(t.end for t in evs), b, peer, evs[0]))
    return out, None


def map_rank(rt: RankTrace, exp: dict) -> tuple[list, list, dict, list]:
    """Match one rank's tokens to its program (see the module docstring).

    Returns ``(occurrences, problems, stats, assignments)``: the mapped :class:`_Occ` list in time
    order, the problems found, counts, and one record per observed token saying where it went."""
    rank = rt.rank
    problems: list[dict] = []
    assignments: list[dict] = []
    active = {ph: [(es, i) for es in steps for i in es.active] for ph, steps in exp.items()}
    calls = [t for t in rt.toks if t.kind == "call"]
    runs: list[tuple[str, list]] = []
    for t in calls:
        if runs and runs[-1][0] == t.phase:
            runs[-1][1].append(t)
        else:
            runs.append((t.phase, [t]))
    seq: list = []   # _Occ or ("broken", phase, tokens)
    count = Counter()
    stats = Counter()
    for ph, run in runs:
        m = len(active.get(ph, []))
        if m == 0 or len(run) % m:
            steps = [es.step for es, _ in active.get(ph, [])]
            problems.append(_problem(rank, "calls", phase=ph, at_us=run[0].start,
                                     expected=(f"a multiple of {m} {ph} call(s) per occurrence (steps {steps})" if m
                                               else f"no {ph} call (the program has none on this rank)"),
                                     found=f"a run of {len(run)} {ph} call(s)"))
            seq.append(("broken", ph, run))
            stats["calls_unmapped"] += len(run)
            for t in run:
                assignments.append({"rank": rank, "kind": "call", "phase": ph, "step": None, "occurrence": None,
                                    "start_us": t.start, "end_us": t.end, "name": t.names[0]})
            continue
        for i in range(0, len(run), m):
            occ = _Occ(ph, count[ph], exp[ph])
            count[ph] += 1
            for t, (es, j) in zip(run[i:i + m], active[ph]):
                occ.calls[(es.step, j)] = t
                stats["calls_mapped"] += 1
                if t.marker is not None:
                    if t.marker[:2] == (ph, es.step):
                        stats["marker_agree"] += 1
                    else:
                        stats["marker_disagree"] += 1
                        problems.append(_problem(rank, "marker", phase=ph, step=es.step, at_us=t.start,
                                                 expected=f"{ph} step {es.step} (mapped by order)",
                                                 found=f"inside the marker of {t.marker[0]} step {t.marker[1]}"))
            seq.append(occ)
    # the ordered slots of the program: posts and calls of every occurrence (broken runs as walls)
    slots: list = []
    for item in seq:
        if isinstance(item, tuple):
            slots.append(("broken",))
            continue
        for es in item.steps:
            if es.start_posts:
                slots.append(("post", item, es, "start", es.start_posts))
            for j in es.active:
                slots.append(("call", item, es, j))
            if es.end_posts:
                slots.append(("post", item, es, "end", es.end_posts))
    anchors = [i for i, s in enumerate(slots) if s[0] == "call"]
    anchor_keys = [slots[i][1].calls[(slots[i][2].step, slots[i][3])].key for i in anchors]
    gaps: dict[int, list] = {}
    for t in rt.toks:
        if t.kind == "comm":
            gaps.setdefault(bisect.bisect_right(anchor_keys, t.key), []).append(t)
    bounds = [-1] + anchors + [len(slots)]
    for g in range(len(bounds) - 1):
        toks = gaps.get(g, [])
        seg = slots[bounds[g] + 1:bounds[g + 1]]
        if any(s[0] == "broken" for s in seg):
            if toks:
                problems.append(_problem(rank, "transfers", at_us=toks[0].start,
                                         expected="transfers of occurrences whose calls are mapped",
                                         found=f"{len(toks)} transfer event(s) next to unmapped calls"))
                stats["transfers_unmapped"] += len(toks)
            continue
        post_slots = [(s[1], s[2].step, s[3], [(side, p) for side, p in s[4]]) for s in seg if s[0] == "post"]
        # a slot tuple for _match_posts: (occ, step, at, [(side, Post)])
        if g == 0 or g == len(bounds) - 2:
            # before the first or after the last mapped call: only the posts its events account
            # for — the nearest to the call (a profile may start or stop mid-occurrence)
            if not toks:
                post_slots = []
            elif post_slots and not _counts_fit(toks, post_slots):
                post_slots = _trim_edge(toks, post_slots, keep_last=(g == 0))
        matched, prob = _match_posts(toks, post_slots, rank, problems)
        if prob is not None:
            prob["at_us"] = toks[0].start if toks else None
            problems.append(prob)
            stats["transfers_unmapped"] += len(toks)
            continue
        # one step's posts are one batched call: every message of a batch is posted at the batch's
        # start (as ringsim run stamps them), and posting returned when its last op did
        batch_start, batch_posted = {}, {}
        for sl, side, p, s, e, b, peer, tok in matched:
            k = (id(sl[0]), sl[1], sl[2])
            batch_start[k] = min(batch_start.get(k, s), s)
            batch_posted[k] = max(batch_posted.get(k, s), tok.posted if tok.posted is not None else s)
        for k, v in batch_posted.items():
            occ_of = next(sl[0] for sl, *_ in matched if (id(sl[0]), sl[1], sl[2]) == k)
            occ_of.posted[(k[1], k[2])] = v
        for sl, side, p, s, e, b, peer, tok in matched:
            occ, step, at = sl[0], sl[1], sl[2]
            s = batch_start[(id(occ), step, at)]
            if b is not None and p.bytes > 0 and abs(b - p.bytes) > 0.005 * p.bytes:
                problems.append(_problem(rank, "bytes", phase=occ.phase, step=step, at_us=s,
                                         expected=f"{side} of {p.bytes:.0f} bytes", found=f"{b:.0f} bytes"))
            if peer is not None and peer != p.peer:
                problems.append(_problem(rank, "peer", phase=occ.phase, step=step, at_us=s,
                                         expected=f"{side} {'to' if side == 'send' else 'from'} rank {p.peer}",
                                         found=f"rank {peer}"))
            occ.comms.setdefault((step, at), []).append((side, p, s, e, b if b is not None else p.bytes,
                                                         p.peer if peer is None else peer))
            stats["transfers_mapped"] += 1
            if tok.marker is not None:
                agree = tok.marker[:2] == (occ.phase, step)
                stats["marker_agree" if agree else "marker_disagree"] += 1
    # merges: the memory work after each call, until the next call / transfer / other kernel
    # (settle_merges decides, over every rank's occurrences, where they end)
    order = {id(t): i for i, t in enumerate(rt.toks)}
    for item in seq:
        if isinstance(item, tuple):
            continue
        for (step, j), t in item.calls.items():
            i = order[id(t)] + 1
            mems = []
            while i < len(rt.toks) and rt.toks[i].kind == "mem":
                mems.append(rt.toks[i])
                i += 1
            if not mems:
                continue
            done = [e for (st, _), lst in item.comms.items() for (_, p, _, e, _, _) in lst
                    if st + p.wait_after == step]
            c = max(done) if done else None
            # where the wait fell: the idle gap that holds the transfers' completion — after k of
            # the memory ops (k = len: after all of them); a gap right after the call is the
            # thread descheduled (a call's merge runs before its step's wait), and a completion
            # before the call's end or inside an op says nothing
            cut = None
            if c is not None and c > t.end:
                reach = t.end
                for k, m in enumerate(mems):
                    if reach <= c <= m.start:
                        cut = k if k >= 1 else None
                        break
                    reach = max(reach, m.end)
                else:
                    cut = len(mems) if c >= reach else None
            item.pending[(step, j)] = (mems, cut)
    stats["occurrences"] = sum(1 for x in seq if not isinstance(x, tuple))
    occs = [x for x in seq if not isinstance(x, tuple)]
    for occ in occs:
        for (step, _), t in occ.calls.items():
            assignments.append({"rank": rank, "kind": "call", "phase": occ.phase, "step": step,
                                "occurrence": occ.index, "start_us": t.start, "end_us": t.end,
                                "name": t.names[0] + (f" (+{len(t.names) - 1})" if len(t.names) > 1 else "")})
        for (step, at), lst in occ.comms.items():
            for side, p, s, e, b, peer in lst:
                assignments.append({"rank": rank, "kind": side, "phase": occ.phase, "step": step,
                                    "occurrence": occ.index, "start_us": s, "end_us": e,
                                    "name": f"{'to' if side == 'send' else 'from'} {peer}, {b:.0f} B, {'+'.join(p.payloads)}"})
    return occs, problems, dict(stats), assignments


def align_occurrences(mapped: list, phases: tuple) -> list:
    """Keep whole iterations only, the same number on every rank: ``mapped`` is ``[(rank, trace,
    occurrences in time order)]``; with both phases, backward occurrences before a rank's first
    forward one and forward ones after its last backward one are a profile's edges (it started or
    stopped mid-iteration), then every (rank, phase) keeps its first n, n the smallest count — so
    that the k-th row of every (rank, phase, kind, step) is iteration k's. Returns the problems."""
    problems = []
    kept: dict = {}
    for rank, _, occs in mapped:
        if set(phases) == {"fwd", "bwd"}:
            fi = [i for i, o in enumerate(occs) if o.phase == "fwd"]
            bi = [i for i, o in enumerate(occs) if o.phase == "bwd"]
            if fi and bi:
                occs = [o for i, o in enumerate(occs)
                        if not (o.phase == "bwd" and i < fi[0]) and not (o.phase == "fwd" and i > bi[-1])]
        kept[rank] = occs
    counts = {(rank, ph): sum(1 for o in occs if o.phase == ph) for rank, occs in kept.items() for ph in phases}
    n = min(counts.values()) if counts else 0
    out = []
    for rank, r, occs in mapped:
        seen = Counter()
        mine = []
        for o in kept[rank]:
            seen[o.phase] += 1
            if seen[o.phase] <= n:
                mine.append(o)
        if len(mine) != len(occs):
            found = ", ".join(f"{sum(1 for o in occs if o.phase == ph)} {ph}" for ph in phases)
            problems.append(_problem(rank, "occurrences", expected=f"whole iterations, as many on every rank ({n})",
                                     found=f"{found} occurrence(s); kept {n} iteration(s)"))
        occs[:] = mine
        out.append((rank, r, occs))
    return problems


def settle_merges(occs: list) -> None:
    """Each call's merge from the memory work after it (:func:`map_rank` found it), over the
    occurrences of every rank at once: the same code runs after every call of a step, so where the
    wait falls among its memory ops is a property of the step. A place seen at least twice and in
    most of the occurrences that show one cuts every occurrence there; otherwise nothing is cut (one
    occurrence's gap holding the completion may be a thread descheduled mid-merge — on a shared
    host it resumes when the transfer's thread frees a core — and its timing cannot tell)."""
    votes: dict = {}
    for occ in occs:
        for key, (mems, cut) in occ.pending.items():
            if cut is not None:
                votes.setdefault((occ.phase, key, len(mems)), Counter())[cut] += 1
    for occ in occs:
        for key, (mems, _) in occ.pending.items():
            v = votes.get((occ.phase, key, len(mems)))
            if v:
                k, n = max(v.items(), key=lambda kv: (kv[1], kv[0]))
                if n >= 2 and 2 * n > sum(v.values()) and 1 <= k < len(mems):
                    mems = mems[:k]
            occ.merges[key] = (min(m.start for m in mems), max(m.end for m in mems))


def _counts_fit(toks, post_slots) -> bool:
    return _match_posts(toks, post_slots, -1)[1] is None


def _trim_edge(toks, post_slots, keep_last: bool) -> list:
    """The longest run of post slots next to the mapped call (the last ones before the first
    call, the first ones after the last call) that the events fit."""
    for k in range(len(post_slots) - 1, 0, -1):
        cand = post_slots[-k:] if keep_last else post_slots[:k]
        if _counts_fit(toks, cand):
            return cand
    return post_slots


def _rows_of(occs: list, rank: int, fpp: dict, activity: list | None = None) -> list:
    """Timeline rows (µs, not yet shifted) of one rank's mapped occurrences. At the CPU level
    ``activity`` (sorted start times of everything the rank's thread ran) says when the thread
    resumed after a wait; at the GPU level (no ``activity``) the device resumes at once."""
    activity = activity or []
    cpu = bool(activity)

    def resume(t: float) -> float:
        i = bisect.bisect_left(activity, t)
        return activity[i] if i < len(activity) else t

    rows = []
    for occ in occs:
        prev_end = None
        for es in occ.steps:
            step_rows = []
            posts = occ.comms.get((es.step, "start"), []) + occ.comms.get((es.step, "end"), [])
            # where the step's work begins: once its posts are issued, else (no posts) when the
            # thread resumed after the previous step — the work that prepares its first call
            # (slices, copies, a GQA expansion) is part of it, as in ringsim run's rows
            at = occ.posted.get((es.step, "start"))
            if at is None and prev_end is not None:
                at = resume(prev_end) if cpu else prev_end
            if es.has_ops and not es.calls and at is not None:  # memory ops only: one zero-length row
                step_rows.append((rank, es.step, occ.phase, "compute", at, at, -1, 0.0, 0.0, 0.0))
            for j, call in enumerate(es.calls):
                t = occ.calls.get((es.step, j))
                if t is None:  # an empty block: a zero-length row where the step's work stands
                    if at is not None:
                        step_rows.append((rank, es.step, occ.phase, "compute", at, at, call.owner, 0.0, 0.0, 0.0))
                    continue
                start = t.start
                if not occ.comms.get((es.step, "start")) and at is not None and at < start and \
                        not any(r[3] == "compute" and r[5] > r[4] for r in step_rows):
                    start = at
                step_rows.append((rank, es.step, occ.phase, "compute", start, t.end, call.owner, 0.0, call.pairs,
                                  call.pairs * call.share * fpp.get(occ.phase, 0.0)))
                # a merge row per call, as ringsim run records it (zero length at the call's end when
                # no memory work was seen): the k-th row of a kind is the k-th occurrence's
                a, b = occ.merges.get((es.step, j), (t.end, t.end))
                step_rows.append((rank, es.step, occ.phase, "merge", a, b, -1, 0.0, 0.0, 0.0))
                at = b
            for side, p, s, e, b, peer in posts:
                step_rows.append((rank, es.step, occ.phase, side, s, e, peer, b, 0.0, 0.0))
            # the wait: from the end of the step's own work to the completion of what it waits for
            waited = [e for (st, _), lst in occ.comms.items() for (_, p, _, e, _, _) in lst
                      if st + p.wait_after == es.step]
            if waited:
                work = [r[5] for r in step_rows if r[3] in ("compute", "merge")] + \
                       [r[4] for r in step_rows if r[3] in ("send", "recv")]
                ws = max(work) if work else prev_end
                if ws is not None:  # zero length when they completed before the work ended
                    we = max(ws, max(waited))
                    if activity and we > ws:
                        we = resume(we)  # a waiting thread resumes after the completion
                    step_rows.append((rank, es.step, occ.phase, "wait", ws, we, -1, 0.0, 0.0, 0.0))
            if step_rows:
                prev_end = max(r[5] for r in step_rows)
            rows += step_rows
    return rows


# ---- one run ---------------------------------------------------------------------------------------
_CONFIG_KEYS = ("schedule", "strategy", "seq_len", "mask", "heads", "kv_heads", "head_dim", "batch", "dtype",
                "implementation", "documents", "link_class", "phase", "device", "cpu_cores", "threads_per_rank")


def _read_files(paths: list[str]) -> list[RankTrace]:
    out = []
    for p in expand_trace_paths(paths):
        data = load_trace(p)
        if not is_kineto_trace(data):
            raise InputError(f"{p} has no 'distributedInfo'; it is not a PyTorch-profiler (Kineto) trace of a "
                             "distributed run (export it with torch.profiler on every rank)")
        out.append(read_rank(data, origin=p))
    return out


def _run_config(ranks: list[RankTrace], config: dict | None) -> tuple[dict, str | None]:
    """The run configuration: embedded ``ringsim`` metadata, overridden by ``config``."""
    cfg: dict = {}
    source = None
    emb = next((r.embedded for r in ranks if r.embedded), None)
    if emb:
        cfg.update({k: v for k, v in emb.items()})
        w = emb.get("workload") or {}
        for k in ("heads", "kv_heads", "head_dim", "batch", "dtype"):
            if k in w:
                cfg.setdefault(k, w[k])
        source = "embedded by ringsim run --profile"
    if config:
        cfg.update(config)
        source = "given (--run-config)" if not emb else source + " + given (--run-config)"
    return cfg, source


def _workload(cfg: dict):
    from .calibration.measured import workload_from_meta

    dims = {k: cfg[k] for k in ("heads", "kv_heads", "head_dim", "batch", "dtype") if k in cfg}
    return workload_from_meta({"seq_len": cfg.get("seq_len"), "workload": dims})


def _program(cfg: dict, world: int, phase: str):
    from .strategies import program_from_meta
    from .workload import ModelSpec, Workload

    if not (cfg.get("schedule") or cfg.get("strategy")) or not cfg.get("seq_len"):
        return None
    wl = _workload(cfg) or Workload(ModelSpec("unknown", 1, 1, 1, 1), int(cfg["seq_len"]))
    return program_from_meta(cfg, world, wl, phase)


def import_kineto(paths: list[str], config: dict | None = None, details: dict | None = None) -> Timeline:
    """One run, one profiler file per rank (or the directory holding them) → a measured
    :class:`Timeline` mapped onto the run's program (see the module docstring).

    ``config`` is the run configuration the profiler does not record (``schedule``, ``seq_len``,
    ``mask``, ``heads``, ``kv_heads``, ``head_dim``, ``batch``, ``dtype``, ``implementation``,
    ``link_class``, ``device``, ``cpu_cores``, ``threads_per_rank``); it overrides what
    ``ringsim run --profile`` embedded. ``details``, when given, receives the per-token
    ``assignments`` and the full ``problems`` list."""
    if not paths:
        raise InputError("no Kineto trace files given; pass one file per rank")
    ranks = _read_files(list(paths))
    per_rank: dict[int, RankTrace] = {}
    world = None
    for r in ranks:
        if r.rank is None or r.world_size is None:
            raise InputError(f"{r.origin}: distributedInfo needs integer 'rank' and 'world_size'")
        if not 0 <= r.rank < r.world_size:
            raise InputError(f"{r.origin}: distributedInfo rank {r.rank} is outside 0..{r.world_size - 1}")
        if world is None:
            world = r.world_size
        elif r.world_size != world:
            raise InputError(f"{r.origin}: world_size {r.world_size} differs from the other files' {world}; "
                             "pass the files of one run")
        if r.rank in per_rank:
            raise InputError(f"{r.origin}: rank {r.rank} given twice; pass one file per rank")
        per_rank[r.rank] = r
    missing = sorted(set(range(world)) - set(per_rank))
    if missing:
        shown = missing if len(missing) <= 8 else missing[:8] + ["…"]
        raise InputError(f"Kineto run of world size {world} lacks the files of ranks {shown}; pass one file per rank "
                         "(`ringsim import-trace` summarises partial runs)")
    if not any(t.kind == "call" for r in per_rank.values() for t in r.toks):
        raise InputError("no attention calls (kernels or CPU ops with flash/fmha/attention/sdpa in their names) in "
                         "the Kineto traces; profile the attention layer (with CUDA activities on GPUs)")
    cfg, source = _run_config(list(per_rank.values()), config)
    phases = {t.phase for r in per_rank.values() for t in r.toks if t.kind == "call"}
    phase = "fwd+bwd" if "bwd" in phases else "fwd"
    program = _program(cfg, world, phase)
    wl = _workload(cfg)
    fpp = {p: float(wl.flops_per_pair(p)) for p in ("fwd", "bwd")} if wl is not None else {}
    rows_us = []
    problems, assignments = [], []
    stats = Counter()
    mapped = []
    for rank in sorted(per_rank):
        r = per_rank[rank]
        if program is None:
            for t in r.toks:
                if t.kind == "call":
                    rows_us.append((rank, -1, t.phase, "compute", t.start, t.end, -1, 0.0, 0.0, 0.0))
                elif t.kind == "comm":
                    for d in (("send", "recv") if t.direction == "sendrecv" else (t.direction,)):
                        rows_us.append((rank, -1, "fwd", d, t.start, t.end, -1 if t.peer is None else t.peer,
                                        t.bytes or 0.0, 0.0, 0.0))
            continue
        occs, probs, st, asg = map_rank(r, expected_steps(program, rank))
        problems += probs
        assignments += asg
        stats.update(st)
        mapped.append((rank, r, occs))
    if mapped:
        align = align_occurrences(mapped, ("fwd", "bwd") if phase == "fwd+bwd" else ("fwd",))
        problems += align
        dropped = stats["occurrences"] - sum(len(occs) for _, _, occs in mapped)
        if dropped:
            stats["occurrences_dropped"] = dropped
    settle_merges([o for _, _, occs in mapped for o in occs])
    for rank, r, occs in mapped:
        rows_us += _rows_of(occs, rank, fpp, r.activity if r.level == "cpu" else None)
    if not rows_us:
        raise InputError("nothing in the Kineto traces could be mapped onto the program; see `ringsim import-trace` "
                         "for what was found and why")
    origin_us = min(r[4] for r in rows_us)
    rows = [r[:4] + ((r[4] - origin_us) * 1e-6, (r[5] - origin_us) * 1e-6) + r[6:] for r in rows_us]
    rows.sort(key=lambda t: (t[0], t[4], t[3]))
    levels = sorted({r.level for r in per_rank.values()})
    meta = {k: v for k, v in cfg.items() if k not in ("iterations", "clock_alignment", "files")}
    meta.update({
        "source": "measured", "generator": "kineto import", "backend": next(iter(per_rank.values())).backend,
        "world_size": world, "files": [r.origin for r in ranks], "phase": phase,
        "kineto_level": levels[0] if len(levels) == 1 else levels,
        "kernels": sorted(set().union(*(set(r.attention_names) | set(r.p2p_names) for r in per_rank.values()))),
        "collectives_skipped": dict(sum((r.collectives for r in per_rank.values()), Counter())),
        "clock_alignment": {"method": "common origin = earliest imported row of all ranks; clocks assumed in sync",
                            "origin_us": origin_us},
        "config_source": source,
    })
    meta.setdefault("device", "gpu" if "gpu" in levels else "cpu")
    meta.setdefault("link_class", "loopback" if meta["device"] == "cpu" else "link")
    if program is None:
        meta["step_mapping"] = "none: no run configuration (schedule, seq_len, …), so no program to map onto"
    else:
        meta["step_mapping"] = "the program's ops by order and kind, rank by rank (ringsim.kineto)"
        meta["mapping"] = {**{k: int(v) for k, v in stats.items()}, "problems": len(problems),
                           "first_problems": problems[:20]}
    dims = {k: cfg[k] for k in ("heads", "kv_heads", "head_dim", "batch", "dtype") if k in cfg}
    if dims:
        dims.setdefault("kv_heads", dims.get("heads"))
        dims.setdefault("batch", 1)
        dims.setdefault("dtype", "bf16")
        dims["layers"] = 1
        meta["workload"] = dims
    for k in ("heads", "kv_heads", "head_dim", "batch", "dtype"):
        meta.pop(k, None)
    if details is not None:
        details["assignments"] = assignments
        details["problems"] = problems
        details["stats"] = dict(stats)
    return Timeline.from_records(rows, meta)


# ---- summary of any traces -----------------------------------------------------------------------------
def summarize(paths: list[str], config: dict | None = None) -> dict:
    """What ringsim finds in profiler traces — ranks, attention calls, transfers, collectives, time
    spans — and, when they form a ring-attention run with a configuration, how they map onto the
    program; otherwise why they cannot be validated (``reasons``)."""
    files = expand_trace_paths(list(paths))
    if not files:
        raise InputError("no trace files given")
    ranks = []
    for p in files:
        data = load_trace(p)
        ranks.append(read_rank(data, origin=p))
    reasons: list[str] = []
    worlds = {r.world_size for r in ranks}
    known = [r for r in ranks if r.rank is not None]
    per_rank = []
    for r in ranks:
        calls = Counter(t.phase for t in r.toks if t.kind == "call")
        comms = [t for t in r.toks if t.kind == "comm"]
        per_rank.append({"file": os.path.basename(r.origin), "rank": r.rank, "world_size": r.world_size,
                         "backend": r.backend or None, "level": r.level,
                         "span_ms": (r.span_us[1] - r.span_us[0]) / 1e3, "attn_fwd": calls.get("fwd", 0),
                         "attn_bwd": calls.get("bwd", 0), "p2p": len(comms),
                         "p2p_MB": sum(t.bytes or 0.0 for t in comms) / 1e6,
                         "collectives": sum(r.collectives.values()), "markers": r.markers, "events": r.n_events})
    attn = sum((r.attention_names for r in ranks), Counter())
    p2p = sum((r.p2p_names for r in ranks), Counter())
    coll = sum((r.collectives for r in ranks), Counter())
    starts = [r.span_us[0] for r in ranks if r.n_events]
    ends = [r.span_us[1] for r in ranks if r.n_events]
    doc = {"files": len(files), "ranks": sorted(r.rank for r in known),
           "world_size": next(iter(worlds)) if len(worlds) == 1 else sorted(w for w in worlds if w is not None),
           "backends": sorted({r.backend for r in ranks if r.backend}), "devices": sorted({d for r in ranks for d in r.devices}),
           "levels": sorted({r.level for r in ranks}), "per_rank": per_rank,
           "attention_kernels": attn.most_common(5), "p2p_kernels": p2p.most_common(5),
           "collectives": dict(coll.most_common()), "time_span_ms": (max(ends) - min(starts)) / 1e3 if starts else 0.0,
           "calls": sum(1 for r in ranks for t in r.toks if t.kind == "call"),
           "transfers": sum(1 for r in ranks for t in r.toks if t.kind == "comm"),
           "transfers_launch_unknown": int(sum(r.p2p_unlinked for r in ranks))}
    no_info = [os.path.basename(r.origin) for r in ranks if r.rank is None or r.world_size is None]
    if no_info:
        reasons.append(f"{len(no_info)} file(s) without distributedInfo rank/world_size ({', '.join(no_info[:3])}): "
                       "not a distributed run's profile")
    if len(worlds - {None}) > 1:
        reasons.append(f"the files come from runs of different world sizes {sorted(worlds - {None})}; give one run")
    world = next(iter(worlds - {None}), None)
    dup = [k for k, v in Counter(r.rank for r in known).items() if v > 1]
    if dup:
        reasons.append(f"rank(s) {dup[:5]} appear in several files; give one file per rank of one run")
    if world is not None and len(worlds - {None}) == 1:
        missing = sorted(set(range(world)) - {r.rank for r in known})
        if missing:
            reasons.append(f"{len(set(r.rank for r in known))} of {world} ranks' files given; the other "
                           f"{len(missing)} {'is' if len(missing) == 1 else 'are'} missing (validation needs every "
                           "rank of the run)")
    if not doc["calls"]:
        reasons.append("no attention calls (no kernel or CPU op named flash/fmha/attention/sdpa): not an attention "
                       "run, or profiled without CUDA activities")
    if not doc["transfers"]:
        what = ", ".join(f"{k} x{v}" for k, v in list(coll.items())[:4])
        reasons.append("no point-to-point transfers: a ring passes K/V from rank to rank with send/recv; "
                       + (f"these ranks exchange data only by collectives ({what})" if coll
                          else "no communication was recorded at all"))
    if any(r.backend == "nccl" and not r.kernels for r in ranks):
        reasons.append("an NCCL run profiled without CUDA activities: CPU launch times only")
    if any(r.level == "cpu" and r.kernels for r in ranks):
        reasons.append("the attention was found only as CPU ops although the trace has GPU kernels: its kernels' "
                       "names are not recognised as attention, and CPU times are launch times, not the device's")
    cfg, source = _run_config(ranks, config)
    doc["config"] = {k: cfg[k] for k in _CONFIG_KEYS if k in cfg} or None
    doc["config_source"] = source
    if not (cfg.get("schedule") or cfg.get("strategy")) or not cfg.get("seq_len"):
        reasons.append("no run configuration: give --run-config schedule=… seq_len=… heads=… head_dim=… "
                       "(ringsim run --profile embeds it)")
    doc["mapping"] = None
    if not reasons:
        det: dict = {}
        try:
            tl = import_kineto(files, config, details=det)
            doc["mapping"] = {**det["stats"], "problems": len(det["problems"]), "first_problems": det["problems"][:8],
                              "rows": len(tl), "schedule": tl.meta.get("schedule"), "phase": tl.meta.get("phase")}
            if det["problems"]:
                reasons.append(f"{len(det['problems'])} event(s)/step(s) could not be matched to the program "
                               "(listed above); validation would use only what matched")
        except InputError as e:
            reasons.append(str(e))
    doc["validatable"] = not reasons
    doc["reasons"] = reasons
    return doc
