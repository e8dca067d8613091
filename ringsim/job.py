"""A job, not a ring: every context-parallel group of a training job on one shared fabric.

A 1,024-GPU job with context parallelism C does not run one ring: it runs ``world / (C·TP)`` CP
groups at once (its data-parallel replicas), and where their routes meet — a leaf's uplink, a
spine — their transfers share the links. This module places the groups on a topology, builds ONE
program over all the job's GPUs and runs it with the ordinary engines, so the groups contend
exactly as the link model says.

Model
-----
- **Ranks.** Job rank ``j = (d·C + c)·TP + t`` for data-parallel replica (CP group) ``d``, CP rank
  ``c`` and tensor-parallel rank ``t`` (Megatron's order: TP fastest, then CP, then DP). A
  *placement* maps job ranks to GPUs.
- **Units.** Each (group d, TP rank t) runs the strategy's program for C ranks on the TP shard of
  the model (``heads/TP`` query heads, ``kv_heads/TP`` K/V heads — one K/V head each when there are
  fewer than TP): the TP ranks of a CP group run TP parallel rings, each moving its share of the K/V.
  The units are composed into one program by :func:`ringsim.program.compose_programs` (no protocol
  logic here). Data-parallel replicas exchange nothing during attention.
- **TP traffic** (its all-reduces) is not simulated message by message: it takes a fixed share of
  every NVLink link (``tp_nvlink_share``, default 0.5 when TP > 1), leaving the rest to CP.
- **Placement policies** (:data:`POLICIES`):
  ``contiguous`` — job rank j on the topology's j-th GPU (its declaration order, or a file's own
  placement): a CP group of 16 fills two 8-GPU nodes, its ring crosses between nodes twice;
  ``rail-aligned`` — CP rank c of a group on node ``b·C + c`` at the same local GPU index (rail)
  for every c, TP ranks side by side in the node: every CP hop stays on one rail;
  ``placement`` — the user's ``--placement`` list (GPU names in job-rank order), used as given.

Symmetry
--------
Groups whose programs and routes are identical and that share no link need simulating once.
Units are joined into *components* when any link carries hops of both (union–find over links);
a component is what must be simulated together. Two components are *equivalent* when, with their
units in job order and their links numbered in order of first use along the units' hops:
the units run the same program object, with bit-identical compute times per (step, rank), every
hop's route is the same sequence of link numbers, and every numbered link has the same bandwidth
and latency. Equivalent components are the same system up to relabelling links and ranks, so the
engines compute the same numbers for them; only one representative per class is simulated (all
representatives together, in one run) and its results are copied to the others, with link figures
mapped through the numbering. Nothing is approximated: a component that differs in any of these is
simulated itself, and the output says whether and how much the reduction was used
(``symmetry``). Ranks inside one unit exchange messages, so they are never split apart.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .costs import CostContext
from .program import Program, compose_programs, unit_messages
from .topology import Topology
from .units import InputError
from .workload import Workload

__all__ = ["POLICIES", "JobLayout", "place_job", "node_groups", "tp_workload", "build_job", "simulate_job",
           "JobRun", "run_job"]

POLICIES = ("contiguous", "rail-aligned", "placement")
DEFAULT_TP_NVLINK_SHARE = 0.5


@dataclass(frozen=True)
class JobLayout:
    """Where a job's ranks sit: ``gpus[j]`` is job rank j's GPU (see the module docstring)."""

    cp: int
    tp: int
    dp: int
    policy: str
    gpus: tuple

    @property
    def world_size(self) -> int:
        return self.cp * self.tp * self.dp

    def unit_ranks(self, d: int, t: int) -> np.ndarray:
        """Job ranks of unit (group d, TP rank t), in CP-rank order."""
        return (d * self.cp + np.arange(self.cp, dtype=np.int64)) * self.tp + t

    def units(self) -> list[tuple[int, int]]:
        return [(d, t) for d in range(self.dp) for t in range(self.tp)]


def node_groups(topology: Topology) -> list[list[str]]:
    """The topology's GPUs by node, in declaration order: a hierarchical file's innermost dimension
    is a node (when there is more than one dimension); an explicit file's GPU names ``node.gpu``
    group by the part before the last dot. One node when neither applies."""
    gpus = list(topology.meta.get("all_gpus") or topology.gpus)
    dims = topology.meta.get("dimensions")
    if dims:
        if len(dims) < 2:
            return [gpus]
        P = int(dims[0]["size"])
        return [gpus[i:i + P] for i in range(0, len(gpus), P)]
    if not all("." in g for g in gpus):
        return [gpus]
    nodes: dict[str, list[str]] = {}
    for g in gpus:
        nodes.setdefault(g.rsplit(".", 1)[0], []).append(g)
    return list(nodes.values())


def _nearest(n: int, k: int) -> str:
    lo = (n // k) * k
    return f"{lo}" if lo else f"{k}"


def place_job(topology: Topology, cp: int, tp: int = 1, dp: int | None = None, policy: str = "contiguous",
              world_size: int | None = None) -> JobLayout:
    """The job's layout under ``policy`` (see the module docstring). ``dp`` defaults to every
    group that fits in ``world_size`` (default: every GPU of the topology)."""
    for name, v in (("--cp-degree", cp), ("--tp", tp)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    if policy not in POLICIES:
        raise InputError(f"unknown placement policy {policy!r}; use one of {', '.join(POLICIES[:2])} "
                         "(or --placement GPU,... for your own)")
    W = world_size if world_size is not None else topology.num_gpus
    topology.check_world_size(W)
    per_group = cp * tp
    if dp is None:
        if W % per_group:
            raise InputError(f"world size {W} is not a multiple of cp-degree × tp = {per_group}; use --world-size "
                             f"{_nearest(W, per_group)} or another --cp-degree")
        dp = W // per_group
    elif isinstance(dp, bool) or not isinstance(dp, int) or dp < 1:
        raise InputError(f"--dp must be a positive integer, got {dp!r}")
    elif world_size is not None and dp * per_group != world_size:
        raise InputError(f"--dp {dp} × --cp-degree {cp} × --tp {tp} = {dp * per_group} GPUs, but --world-size is "
                         f"{world_size}; give one of them")
    need = dp * per_group
    if need > topology.num_gpus:
        raise InputError(f"the job needs dp × cp × tp = {need} GPUs and topology {topology.name} has "
                         f"{topology.num_gpus}; lower --dp or --cp-degree")
    if policy in ("contiguous", "placement"):
        nodes = node_groups(topology)
        P = len(nodes[0])
        if tp > 1 and len(nodes) > 1 and P % tp:
            raise InputError(f"--tp {tp} does not divide the {P} GPUs of a node; TP stays inside a node")
        return JobLayout(cp, tp, dp, policy, tuple(topology.gpus[:need]))
    nodes = node_groups(topology)
    P = len(nodes[0])
    if any(len(n) != P for n in nodes):
        raise InputError(f"rail-aligned placement needs nodes of equal size; topology {topology.name} has nodes of "
                         f"{sorted({len(n) for n in nodes})} GPUs")
    if P % tp:
        raise InputError(f"--tp {tp} does not divide the {P} GPUs of a node; TP stays inside a node")
    if cp > len(nodes):
        raise InputError(f"rail-aligned placement puts each CP rank on its own node: cp-degree {cp} needs {cp} "
                         f"nodes and topology {topology.name} has {len(nodes)}; use --placement-policy contiguous")
    slots = P // tp
    capacity = (len(nodes) // cp) * slots
    if dp > capacity:
        raise InputError(f"rail-aligned placement fits {capacity} groups of cp-degree {cp} on {len(nodes)} nodes of "
                         f"{P} GPUs, fewer than the {dp} asked; lower --dp or use --placement-policy contiguous")
    gpus = []
    for d in range(dp):
        block, slot = divmod(d, slots)
        for c in range(cp):
            node = nodes[block * cp + c]
            for t in range(tp):
                gpus.append(node[slot * tp + t])
    return JobLayout(cp, tp, dp, policy, tuple(gpus))


def tp_workload(workload: Workload, tp: int) -> Workload:
    """The share of the model one TP rank runs: ``heads/tp`` query heads and ``kv_heads/tp`` K/V
    heads (one each when there are fewer K/V heads than TP ranks: replicated, as Megatron does)."""
    if tp == 1:
        return workload
    m = workload.model
    if m.heads % tp:
        raise InputError(f"--tp {tp} does not divide the model's {m.heads} query heads; pick a TP that does")
    if m.kv_heads % tp == 0:
        kv = m.kv_heads // tp
    elif tp % m.kv_heads == 0:
        kv = 1
    else:
        raise InputError(f"--tp {tp} and the model's {m.kv_heads} K/V heads do not divide each other; pick a TP "
                         "that divides or is a multiple of the K/V heads")
    return replace(workload, model=replace(m, name=f"{m.name}/tp{tp}", heads=m.heads // tp, kv_heads=kv))


def job_topology(topology: Topology, layout: JobLayout, tp_nvlink_share: float) -> Topology:
    """The topology with job rank j on ``layout.gpus[j]`` (stragglers follow their GPU) and, when
    TP takes a share of NVLink, every ``nvlink`` link scaled to what is left for CP."""
    overrides = {}
    index = {g: j for j, g in enumerate(layout.gpus)}
    for r, dev in topology.device_overrides.items():
        if r < len(topology.gpus) and topology.gpus[r] in index:
            overrides[index[topology.gpus[r]]] = dev
    t = Topology(topology.name, topology.device, list(layout.gpus), list(topology.links), topology.source,
                 dict(topology.meta), overrides)
    if tp_nvlink_share > 0:
        if not any(l.link_class == "nvlink" for l in t.links):
            raise InputError(f"topology {topology.name} has no nvlink links for TP's share; set --tp-nvlink-share 0")
        t = t.scale_link_class("nvlink", 1.0 - tp_nvlink_share)
        t.name = topology.name
    return t


def build_job(strategy, workload: Workload, layout: JobLayout, mask, phase: str):
    """``(program, unit program, rank maps)``: one unit program (the strategy on the TP shard of the
    model, C ranks) composed over every (group, TP rank) of the layout."""
    wl = tp_workload(workload, layout.tp)
    unit = strategy.build(wl, layout.cp, mask, phase)
    maps = [layout.unit_ranks(d, t) for d, t in layout.units()]
    meta = {"job": {"cp": layout.cp, "tp": layout.tp, "dp": layout.dp, "policy": layout.policy}}
    return compose_programs([unit] * len(maps), maps, layout.world_size, meta=meta), unit, maps


# ---- symmetry ---------------------------------------------------------------------------------------

def _unit_routes(unit: Program, rank_map: np.ndarray, topology: Topology) -> list[tuple]:
    f = unit.flat
    return [tuple(topology.route(int(rank_map[a]), int(rank_map[b]))) for a, b in zip(f.hop_src, f.hop_dst)]


def components(routes: list[list[tuple]]) -> list[list[int]]:
    """Units joined through shared links (union–find): each list is one component's units, sorted;
    components in order of their first unit."""
    parent = list(range(len(routes)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    owner: dict[int, int] = {}
    for u, rts in enumerate(routes):
        for rt in rts:
            for lid in rt:
                v = owner.setdefault(lid, u)
                if v != u:
                    a, b = find(u), find(v)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
    comps: dict[int, list[int]] = {}
    for u in range(len(routes)):
        comps.setdefault(find(u), []).append(u)
    return [comps[k] for k in sorted(comps)]


def _signature(comp: list[int], unit_ids: list, compute: np.ndarray, maps: list, routes: list, topology: Topology):
    """The component's exact signature and its links in numbering order (see the module docstring)."""
    number: dict[int, int] = {}
    hops = []
    for u in comp:
        for rt in routes[u]:
            hops.append(tuple(number.setdefault(lid, len(number)) for lid in rt))
    links = list(number)
    figures = tuple((topology.links[l].bandwidth_Bps, topology.links[l].latency_s) for l in links)
    comp_bytes = tuple(np.ascontiguousarray(compute[:, maps[u]]).tobytes() for u in comp)
    return (tuple(unit_ids[u] for u in comp), comp_bytes, tuple(hops), figures), links


@dataclass
class JobRun:
    """What the engines computed for a job, per unit (see :func:`run_job`): ``T[u]`` ``[N+1, C]``
    step starts, ``E[u]`` compute ends, ``XS[u]``/``XE[u]`` message starts/ends in the unit's own
    message order; per directed link bytes and streaming time; the engine; the symmetry record."""

    T: list
    E: list
    XS: list
    XE: list
    link_bytes: dict
    link_busy_s: dict
    engine: str
    symmetry: dict
    routes: list
    compute_s: np.ndarray


def run_job(program: Program, unit: Program, maps: list, workload: Workload, topology: Topology, cost_model,
            knobs, engine: str = "auto", symmetry: bool = True) -> JobRun:
    """Run the composed job ``program`` (``maps[u]``: unit u's job ranks) on the job topology.

    With ``symmetry`` (the default) equivalent components are simulated once (see the module
    docstring); the results are those of the full run, identical to it."""
    from .engines import Knobs, simulate_program

    knobs = knobs or Knobs()
    topo = cost_model.apply_to_topology(topology, program)
    compute = np.asarray(cost_model.step_seconds(CostContext(program, workload, topo)), dtype=np.float64)
    routes = [_unit_routes(unit, m, topo) for m in maps]
    comps = components(routes)
    unit_ids = [id(unit)] * len(maps)
    classes: dict = {}
    comp_links = []
    for k, comp in enumerate(comps):
        sig, links = _signature(comp, unit_ids, compute, maps, routes, topo)
        comp_links.append(links)
        classes.setdefault(sig, []).append(k)
    reps = [ks[0] for ks in classes.values()]
    reduce = symmetry and len(reps) < len(comps)
    if reduce:
        run_units = sorted(u for k in reps for u in comps[k])
    else:
        run_units = list(range(len(maps)))
    # the program actually run: the chosen units, ranks renumbered in job order
    ranks = np.sort(np.concatenate([maps[u] for u in run_units]))
    local = np.full(program.world_size, -1, dtype=np.int64)
    local[ranks] = np.arange(len(ranks))
    if reduce:
        sub_maps = [local[maps[u]] for u in run_units]
        prog = compose_programs([unit] * len(run_units), sub_maps, len(ranks), meta=dict(program.meta))
        overrides = {int(local[r]): d for r, d in topology.device_overrides.items() if r < len(local) and local[r] >= 0}
        run_topo = Topology(topology.name, topology.device, [topology.gpus[r] for r in ranks], list(topology.links),
                            topology.source, dict(topology.meta), overrides)
    else:
        sub_maps, prog, run_topo = [maps[u] for u in run_units], program, topology
    res = simulate_program(prog, workload, run_topo, cost_model, knobs, engine)
    if not np.array_equal(res.priced_compute_s, compute[:, ranks]):
        raise AssertionError("job symmetry: the reduced program's compute times differ from the job's")
    compute = compute.copy()  # as run: with the NCCL slowdown the engine added (equal in equal units)
    compute[:, ranks] = res.compute_s
    flat = res.program.flat
    A = res.arrays
    per = {}
    for u, m in zip(run_units, sub_maps):
        ids = unit_messages(flat, m)
        per[u] = (A.step_start_s[:, m], A.compute_end_s[:, m], A.msg_start_s[ids], A.msg_end_s[ids])
    link_bytes, link_busy = dict(res.link_bytes), dict(res.link_busy_s)
    if reduce:
        for ks in classes.values():
            rep = ks[0]
            for k in ks[1:]:
                for u_rep, u in zip(comps[rep], comps[k]):
                    per[u] = per[u_rep]
                    compute[:, maps[u]] = compute[:, maps[u_rep]]
                for l_rep, l in zip(comp_links[rep], comp_links[k]):
                    if l_rep in res.link_bytes:
                        link_bytes[l] = res.link_bytes[l_rep]
                        link_busy[l] = res.link_busy_s[l_rep]
    sym = {"used": bool(reduce), "units": len(maps), "components": len(comps), "classes": len(classes),
           "simulated_units": len(run_units), "simulated_ranks": int(len(ranks)),
           "rule": "components of units joined by shared links; equal when the same program, identical compute "
                   "per (step, rank), the same routes up to link renumbering and identical link figures"}
    order = range(len(maps))
    return JobRun([per[u][0] for u in order], [per[u][1] for u in order], [per[u][2] for u in order],
                  [per[u][3] for u in order], dict(sorted(link_bytes.items())), dict(sorted(link_busy.items())),
                  res.engine, sym, routes, compute)


# ---- the job's report -----------------------------------------------------------------------------------

def _link_row(topo: Topology, lid: int, groups: set, flows: int, run: JobRun) -> dict:
    l = topo.links[lid]
    return {"link": lid, "src": l.src, "dst": l.dst, "link_class": l.link_class, "bandwidth_Bps": l.bandwidth_Bps,
            "groups": len(groups), "flows": flows, "bytes": run.link_bytes.get(lid, 0.0),
            "busy_s": run.link_busy_s.get(lid, 0.0)}


def simulate_job(spec, cp: int, tp: int = 1, dp: int | None = None, policy: str = "contiguous",
                 tp_nvlink_share: float | None = None, symmetry: bool = True, compare_placement: bool = True,
                 keep_run: bool = False) -> dict:
    """Simulate every CP group of a job (see the module docstring) and report per-group makespans,
    the slowest group, the links where groups meet and (``compare_placement``) the same job under
    the other placement policy. ``spec`` is a :class:`ringsim.simulate.SimSpec` (its world size,
    if set, is the job's GPUs)."""
    from .engines import Knobs
    from .strategies import parse_strategy

    if spec.phase not in ("fwd", "fwd+bwd"):
        raise InputError(f"unknown phase {spec.phase!r}; use fwd or fwd+bwd")
    share = (DEFAULT_TP_NVLINK_SHARE if tp > 1 else 0.0) if tp_nvlink_share is None else float(tp_nvlink_share)
    if not 0.0 <= share < 1.0:
        raise InputError(f"--tp-nvlink-share must be in [0, 1), got {tp_nvlink_share!r}")
    layout = place_job(spec.topology, cp, tp, dp, policy, spec.world_size)
    topo = job_topology(spec.topology, layout, share)
    strategy = parse_strategy(spec.schedule, spec.implementation, spec.documents, cached_tokens=spec.cached_tokens)
    cost = spec.resolved_cost_model()
    mask = spec.resolved_mask()
    wl = tp_workload(spec.workload, tp)
    program, unit, maps = build_job(strategy, spec.workload, layout, mask, spec.phase)
    knobs = spec.knobs or Knobs()
    run = run_job(program, unit, maps, wl, topo, cost, knobs, spec.engine, symmetry)
    layers = spec.workload.layers
    units = layout.units()
    group_layer = np.zeros(layout.dp)
    for (d, _), T in zip(units, run.T):
        group_layer[d] = max(group_layer[d], float(T[-1].max()))
    slow = int(np.argmax(group_layer))
    fast = int(np.argmin(group_layer))

    def group_gpus(d):
        return [layout.gpus[int(r)] for t in range(tp) for r in layout.unit_ranks(d, t)]

    per_group = [{"group": d, "makespan_s": float(group_layer[d]) * layers, "layer_makespan_s": float(group_layer[d]),
                  "first_gpu": layout.gpus[d * cp * tp], "last_gpu": layout.gpus[(d + 1) * cp * tp - 1]}
                 for d in range(layout.dp)]
    # where groups meet: per directed link, the groups and the hops (flows) whose routes cross it
    link_groups: dict[int, set] = {}
    link_flows: dict[int, int] = {}
    for (d, _), rts in zip(units, run.routes):
        for rt in rts:
            for lid in rt:
                link_groups.setdefault(lid, set()).add(d)
                link_flows[lid] = link_flows.get(lid, 0) + 1
    ranked = sorted(link_groups, key=lambda l: (-len(link_groups[l]), -link_flows[l], -run.link_busy_s.get(l, 0.0), l))
    shared = [l for l in ranked if len(link_groups[l]) > 1]
    most = _link_row(topo, ranked[0], link_groups[ranked[0]], link_flows[ranked[0]], run) if ranked else None
    out = {
        "job": True,
        "schedule": spec.schedule,
        "model": spec.workload.model.name,
        "topology": spec.topology.name,
        "seq_len": spec.workload.seq_len,
        "mask": str(mask),
        "phase": spec.phase,
        "cost_model": cost.name,
        "kernels": cost.describe().get("profile", cost.name),
        "implementation": spec.implementation,
        "cp_degree": cp, "tp": tp, "dp": layout.dp,
        "world_size": layout.world_size,
        "groups": layout.dp,
        "placement": layout.policy,
        "tp_nvlink_share": share,
        "engine": run.engine,
        "attention_layers": layers,
        "makespan_s": float(group_layer[slow]) * layers,
        "layer_makespan_s": float(group_layer[slow]),
        "slowest_group": {"group": slow, "makespan_s": float(group_layer[slow]) * layers,
                          "layer_makespan_s": float(group_layer[slow]), "gpus": group_gpus(slow)},
        "fastest_group": {"group": fast, "makespan_s": float(group_layer[fast]) * layers},
        "group_spread": float(group_layer[slow] / group_layer[fast]) if group_layer[fast] > 0 else 1.0,
        "links_shared_by_groups": len(shared),
        "most_shared_link": most,
        "shared_links": [_link_row(topo, l, link_groups[l], link_flows[l], run) for l in shared[:10]],
        "symmetry": run.symmetry,
        "per_group": per_group,
    }
    if compare_placement:
        other = "rail-aligned" if policy != "rail-aligned" else "contiguous"
        try:
            alt = simulate_job(spec, cp, tp, dp, other, tp_nvlink_share, symmetry, compare_placement=False)
            out["other_placement"] = {
                "placement": other, "makespan_s": alt["makespan_s"], "layer_makespan_s": alt["layer_makespan_s"],
                "ratio_to_this": alt["makespan_s"] / out["makespan_s"] if out["makespan_s"] > 0 else float("nan"),
                "slowest_group": alt["slowest_group"]["group"], "links_shared_by_groups": alt["links_shared_by_groups"],
                "most_shared_link": alt["most_shared_link"], "engine": alt["engine"], "symmetry": alt["symmetry"]}
        except InputError as e:
            out["other_placement"] = {"placement": other, "error": str(e)}
    if keep_run:
        out["_run"] = (run, layout, program, topo)
    return out
