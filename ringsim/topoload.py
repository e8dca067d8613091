"""Topology files: load, validate and build a :class:`~ringsim.topology.Topology` (DESIGN.md §3.5).

A topology file is YAML in one of two forms.

**Hierarchical** (as ASTRA-sim users know it)::

    name: dgx-h100-2n
    dimensions:                       # innermost first
      - {topology: switch, size: 8, bandwidth: "450 GB/s", latency: "1.5 us", link_class: nvlink}
      - {topology: switch, size: 2, bandwidth: "400 Gb/s", latency: "0.6 us", link_class: ib}
    device: {name: H100 SXM, peak_flops: "989 TFLOP/s", efficiency: 0.75, memory: "80 GB", tile: [128, 128]}

Think of an odometer: every GPU has coordinates ``(i0, i1, …)`` and global index
``i0 + size0·(i1 + size1·(…))``. Dimension k joins the GPUs that differ *only* in coordinate k:

- ``switch``: one switch vertex per such group, one full-duplex link from each member to it, so a
  transfer inside the dimension crosses two links (GPU → switch → GPU). An outer switch dimension over
  nodes is therefore a rail-optimised fabric: GPU i of every node hangs on rail switch i.
- ``ring``: a full-duplex link between neighbours i and i+1 (mod size).
- ``fully-connected``: a direct full-duplex link between every pair.
- ``fat-tree``: a two-level switch. Each group's members, in coordinate order, hang on *leaf*
  switches of ``leaf_size`` members (one link each, ``bandwidth``/``latency``); every leaf has one
  link up to the dimension's *spine*, shared by all the dimension's groups, carrying
  ``leaf_size × bandwidth / oversubscription`` (the leaf's uplinks as one pipe: ideal ECMP
  spreading; ``oversubscription: 4`` is a 4:1 leaf, ``1`` non-blocking). An outer fat-tree over
  nodes is a rail-optimised fabric: leaf ``j`` of rail i holds GPU i of nodes ``j·leaf_size …``, and
  traffic between rails or leaves crosses the spine. Leaves are named ``sw{k}:n*.g2/leaf0``, the
  spine ``spine{k}``.

``bandwidth`` and ``latency`` belong to each *link*, per direction (a switch hop therefore pays the
latency twice). GPU vertices are named ``g{i0}`` (one dimension), ``n{i1}.g{i0}`` (two),
``p{i2}.n{i1}.g{i0}`` (three), ``d3_{i3}.p…`` beyond; a switch of dimension k is named after the
group it joins with ``*`` in place of coordinate k (``sw0:n3.g*`` is node 3's NVSwitch,
``sw1:n*.g2`` is rail switch 2).

**Explicit**, for irregular machines (PCIe trees, shared NICs)::

    nodes: [{name: n0.g0, kind: gpu}, {name: host, kind: host}, …]
    links: [{a: n0.g0, b: host, bandwidth: "31 GB/s", latency: "2 us", link_class: pcie}, …]

GPUs, in rank order, are the ``gpu`` nodes in declaration order.

Either form may set ``gpu_transit: false``: routes then never pass through a GPU other than their
ends (see :mod:`ringsim.topology`; the default, true, lets a transfer hop through a GPU over NVLink).

Both forms carry ``name`` (default: the file's stem), optional ``description`` and ``source``
(citations, a string or a list), a ``device`` section and an optional ``placement`` (GPU names, one
per rank; it may name a subset of the GPUs, which then become the whole ring). Every link is full
duplex: it becomes two directed :class:`~ringsim.topology.Link` objects with the same figures, ids
equal to their index in ``Topology.links``.

Every mistake raises :class:`~ringsim.units.InputError` with one line naming the file, the key and
the fix.
"""
from __future__ import annotations

import itertools
import os
from importlib import resources

import networkx as nx

from . import limits
from .limits import MAX_TILE
from .topology import Device, Link, Topology
from .units import InputError, parse_bandwidth, parse_bytes, parse_flops, parse_time
from .yamlio import load_yaml, read_yaml_file

__all__ = ["load_topology", "list_presets", "preset_names", "build_topology", "VERTEX_KINDS", "DIMENSION_KINDS"]

VERTEX_KINDS = ("gpu", "switch", "nic", "host", "cpu")
DIMENSION_KINDS = ("switch", "ring", "fully-connected", "fat-tree")

_TOP_COMMON = ("name", "description", "source", "device", "placement", "gpu_transit")
_TOP_HIER = _TOP_COMMON + ("dimensions",)
_TOP_EXPL = _TOP_COMMON + ("nodes", "links")
_DIM_KEYS = ("topology", "size", "bandwidth", "latency", "link_class", "leaf_size", "oversubscription")
_DEV_KEYS = ("name", "peak_flops", "efficiency", "memory", "tile", "kernel_overhead", "memory_bandwidth",
             "launch_overhead", "kernels", "p2p_efficiency", "sms", "p2p_sms")
_NODE_KEYS = ("name", "kind")
_LINK_KEYS = ("a", "b", "bandwidth", "latency", "link_class")
_COORD_PREFIX = ("g", "n", "p")
_FILE_FIX = "see DESIGN.md §3.5 for what a topology file holds"


# ---- presets -----------------------------------------------------------------------------------

def _preset_dir():
    return resources.files("ringsim.topologies")


def preset_names() -> list[str]:
    """Names of the shipped presets (YAML files in ``ringsim.topologies``), sorted."""
    return sorted(p.name[:-5] for p in _preset_dir().iterdir() if p.name.endswith(".yaml"))


def list_presets() -> list[dict]:
    """One row per preset: name, GPUs, device, description."""
    rows = []
    for name in preset_names():
        t = load_topology(name)
        rows.append({"name": name, "gpus": t.num_gpus, "device": t.device.name,
                     "description": t.meta.get("description", "")})
    return rows


def load_topology(name_or_path: str, placement: list[str] | None = None) -> Topology:
    """A preset name (``dgx-h100-8``) or a path to a YAML file → validated :class:`Topology`.

    ``placement`` (GPU names, one per rank) overrides the file's own ``placement``.
    """
    text_name = str(name_or_path)
    presets = preset_names()
    stem = text_name[:-5] if text_name.endswith(".yaml") else text_name
    if os.sep not in text_name and "/" not in text_name and stem in presets:
        res = _preset_dir().joinpath(stem + ".yaml")
        label = f"preset {stem}"
        text = res.read_text(encoding="utf-8")
        source = f"preset:{stem}"
    elif os.path.isfile(text_name):
        label = text_name
        source = os.path.abspath(text_name)
        stem = os.path.splitext(os.path.basename(text_name))[0]
        doc = read_yaml_file(text_name, label, "topology file", _FILE_FIX)
        return build_topology(doc, label, default_name=stem, source=source, placement=placement)
    else:
        raise InputError(f"topology {text_name!r} is neither a preset nor an existing file; "
                         f"presets: {', '.join(presets)} (or give a path to a YAML file)")
    doc = load_yaml(text, label, _FILE_FIX)
    return build_topology(doc, label, default_name=stem, source=source, placement=placement)


# ---- validation helpers ------------------------------------------------------------------------

def _err(label: str, key: str, msg: str) -> InputError:
    return InputError(f"{label}: {key}: {msg}")


def _check_keys(label: str, key: str, mapping, allowed) -> None:
    if not isinstance(mapping, dict):
        raise _err(label, key, f"expected a mapping with keys {', '.join(allowed)}, got {type(mapping).__name__}")
    for k in mapping:
        if k not in allowed:
            raise _err(label, f"{key}.{k}" if key else str(k),
                       f"unknown key; allowed keys here: {', '.join(allowed)}")


def _need(label: str, key: str, mapping: dict, k: str):
    if k not in mapping or mapping[k] is None:
        raise _err(label, f"{key}.{k}" if key else k, "missing; add it")
    return mapping[k]


def _parse(label: str, key: str, fn, value, what: str):
    if isinstance(value, str):
        try:  # PyYAML reads 1e9 (no dot) as a string: a bare number means base units
            value = float(value)  # "1e999" and "nan" too: the parsers refuse them with the range
        except ValueError:
            pass
    try:
        return fn(value, what)
    except InputError as e:
        raise _err(label, key, str(e)) from None


def _str(label: str, key: str, value) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool) or str(value) == "":
        raise _err(label, key, f"expected a non-empty string, got {value!r}")
    return str(value)


def _build_device(doc: dict, label: str) -> Device:
    if "device" not in doc or doc["device"] is None:
        raise _err(label, "device", "missing section; add device: {name, peak_flops, efficiency, memory} "
                   "e.g. {name: H100 SXM, peak_flops: '989 TFLOP/s', efficiency: 0.75, memory: '80 GB'}")
    d = doc["device"]
    _check_keys(label, "device", d, _DEV_KEYS)
    name = _str(label, "device.name", _need(label, "device", d, "name"))
    peak = _parse(label, "device.peak_flops", parse_flops, _need(label, "device", d, "peak_flops"), "peak_flops")
    eff = _need(label, "device", d, "efficiency")
    if isinstance(eff, bool) or not isinstance(eff, (int, float)) or not 0 < eff <= 1:
        raise _err(label, "device.efficiency", f"must be a number in (0, 1], got {eff!r}; e.g. 0.75")
    mem = _parse(label, "device.memory", parse_bytes, _need(label, "device", d, "memory"), "memory")
    tile = d.get("tile")
    if tile is not None:
        if (not isinstance(tile, list) or len(tile) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) and 0 < x <= MAX_TILE for x in tile)):
            raise _err(label, "device.tile", f"must be two integers in [1, {MAX_TILE}] [q, k], got {tile!r}; "
                       "e.g. [128, 128]")
        tile = (tile[0], tile[1])
    overhead = _parse(label, "device.kernel_overhead", lambda v, w: parse_time(v, w, "kernel_overhead"),
                      d.get("kernel_overhead", 0.0), "kernel_overhead")
    hbm = None
    if d.get("memory_bandwidth") is not None:
        hbm = _parse(label, "device.memory_bandwidth", parse_bandwidth, d["memory_bandwidth"], "memory_bandwidth")
    launch = _parse(label, "device.launch_overhead", lambda v, w: parse_time(v, w, "kernel_overhead"),
                    d.get("launch_overhead", 0.0), "launch_overhead")
    profiles, default = (), None
    k = d.get("kernels")
    if k is not None:
        if not isinstance(k, dict) or not k:
            raise _err(label, "device.kernels", "must map kernel families to profiles, e.g. "
                       "{default: fa3, fa2: h100-sxm-fa2, fa3: h100-sxm-fa3}")
        default = k.get("default")
        profiles = tuple((str(f), str(v)) for f, v in k.items() if f != "default")
        if default is not None and default != "roofline" and default not in dict(profiles):
            raise _err(label, "device.kernels.default", f"{default!r} is not one of the families listed "
                       f"({', '.join(dict(profiles)) or 'none'}) nor roofline")
    p2p = d.get("p2p_efficiency") or {}
    if not isinstance(p2p, dict) or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1
                                        for v in p2p.values()):
        raise _err(label, "device.p2p_efficiency", "must map link classes to fractions in (0, 1], e.g. {nvlink: 0.88}")
    sms = d.get("sms")
    if sms is not None and (isinstance(sms, bool) or not isinstance(sms, int) or sms < 1):
        raise _err(label, "device.sms", f"must be a positive integer (the GPU's SMs, e.g. 132 on H100), got {sms!r}")
    p2p_sms = d.get("p2p_sms") or {}
    if p2p_sms and sms is None:
        raise _err(label, "device.p2p_sms", "needs device.sms (the SMs they are a share of), e.g. sms: 132")
    if not isinstance(p2p_sms, dict) or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= sms
                                            for v in p2p_sms.values()):
        raise _err(label, "device.p2p_sms", f"must map link classes to SM counts in [0, {sms}], e.g. {{nvlink: 32, ib: 2}}")
    return Device(name, peak, float(eff), mem, tile, overhead, memory_bandwidth_Bps=hbm, launch_s=launch,
                  kernel_profiles=profiles, default_kernels=default,
                  p2p_efficiency=tuple((str(c), float(v)) for c, v in p2p.items()),
                  sms=sms, p2p_sms=tuple((str(c), int(v)) for c, v in p2p_sms.items()))


def _full_duplex(links: list[Link], a: str, b: str, bw: float, lat: float, cls: str) -> None:
    links.append(Link(len(links), a, b, bw, lat, cls))
    links.append(Link(len(links), b, a, bw, lat, cls))


def _coord_names(coords: tuple, star: int | None = None) -> str:
    """GPU (or switch group) name from coordinates, outermost first: n1.g3; '*' at index ``star``."""
    parts = []
    for k in reversed(range(len(coords))):
        prefix = _COORD_PREFIX[k] if k < len(_COORD_PREFIX) else f"d{k}_"
        parts.append(prefix + ("*" if k == star else str(coords[k])))
    return ".".join(parts)


def _links_per_group(kind: str, size: int) -> int:
    """Full-duplex links one group of a dimension gets (what the builder below makes)."""
    if size == 1:
        return 0
    if kind == "switch":
        return size
    if kind == "ring":
        return size if size > 2 else 1
    return size * (size - 1) // 2


def _build_hierarchical(doc: dict, label: str):
    dims = doc["dimensions"]
    if not isinstance(dims, list) or not dims:
        raise _err(label, "dimensions", "must be a non-empty list, innermost first, of "
                   "{topology: switch|ring|fully-connected, size, bandwidth, latency}")
    spec = []
    for k, d in enumerate(dims):
        key = f"dimensions[{k}]"
        _check_keys(label, key, d, _DIM_KEYS)
        kind = _need(label, key, d, "topology")
        if kind not in DIMENSION_KINDS:
            raise _err(label, f"{key}.topology", f"unknown topology {kind!r}; use one of {', '.join(DIMENSION_KINDS)}")
        size = _need(label, key, d, "size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise _err(label, f"{key}.size", f"must be an integer >= 1, got {size!r}")
        bw = _parse(label, f"{key}.bandwidth", parse_bandwidth, _need(label, key, d, "bandwidth"), "bandwidth")
        lat = _parse(label, f"{key}.latency", parse_time, _need(label, key, d, "latency"), "latency")
        cls = _str(label, f"{key}.link_class", d.get("link_class", f"dim{k}"))
        leaf, over = d.get("leaf_size"), d.get("oversubscription")
        if kind != "fat-tree":
            for extra in ("leaf_size", "oversubscription"):
                if extra in d:
                    raise _err(label, f"{key}.{extra}", "only a fat-tree dimension takes it; remove it or use "
                               "topology: fat-tree")
        else:
            leaf = _need(label, key, d, "leaf_size")
            if isinstance(leaf, bool) or not isinstance(leaf, int) or leaf < 1 or size % leaf:
                raise _err(label, f"{key}.leaf_size", f"must be an integer >= 1 dividing size {size}, got {leaf!r}")
            over = d.get("oversubscription", 1)
            if isinstance(over, bool) or not isinstance(over, (int, float)) or not over > 0:
                raise _err(label, f"{key}.oversubscription", f"must be a positive number (4 for 4:1), got {over!r}")
        spec.append((kind, size, bw, lat, cls, leaf, over))
    sizes = [s[1] for s in spec]
    total = 1
    for s in sizes:
        total *= s
    limits.GPUS.check(total, f"{label}: dimensions", "shrink the dimensions' sizes")
    n_links = sum((total // size) * _links_per_group(kind, size) for kind, size, *_ in spec)
    limits.LINKS.check(n_links, f"{label}: dimensions",
                       "use switch dimensions (one link per GPU) instead of fully-connected ones, or smaller sizes")
    # coordinates in global-index order: i0 varies fastest
    coords = [tuple(c[::-1]) for c in itertools.product(*[range(s) for s in reversed(sizes)])]
    gpus = [_coord_names(c) for c in coords]
    vertices = {g: "gpu" for g in gpus}
    links: list[Link] = []
    for k, (kind, size, bw, lat, cls, leaf, over) in enumerate(spec):
        if size == 1:
            continue
        # groups: GPUs equal in every coordinate but k, in order of their first member
        groups: dict[tuple, list[str]] = {}
        for c, g in zip(coords, gpus):
            groups.setdefault(c[:k] + c[k + 1:], []).append(g)
        for c_key, members in groups.items():
            if kind == "switch":
                c_full = c_key[:k] + (0,) + c_key[k:]
                sw = f"sw{k}:{_coord_names(c_full, star=k)}"
                vertices[sw] = "switch"
                for g in members:
                    _full_duplex(links, g, sw, bw, lat, cls)
            elif kind == "fat-tree":
                spine = f"spine{k}"
                vertices[spine] = "switch"
                c_full = c_key[:k] + (0,) + c_key[k:]
                for j in range(size // leaf):
                    lf = f"sw{k}:{_coord_names(c_full, star=k)}/leaf{j}"
                    vertices[lf] = "switch"
                    for g in members[j * leaf:(j + 1) * leaf]:
                        _full_duplex(links, g, lf, bw, lat, cls)
                    _full_duplex(links, lf, spine, leaf * bw / over, lat, cls)
            elif kind == "ring":
                pairs = [(i, (i + 1) % size) for i in range(size if size > 2 else 1)]
                for i, j in pairs:
                    _full_duplex(links, members[i], members[j], bw, lat, cls)
            else:  # fully-connected
                for i, j in itertools.combinations(range(size), 2):
                    _full_duplex(links, members[i], members[j], bw, lat, cls)
    meta = {"form": "hierarchical",
            "dimensions": [{"topology": kind, "size": size, "bandwidth_Bps": bw, "latency_s": lat, "link_class": cls,
                            **({"leaf_size": leaf, "oversubscription": over} if kind == "fat-tree" else {})}
                           for kind, size, bw, lat, cls, leaf, over in spec]}
    return gpus, vertices, links, meta


def _build_explicit(doc: dict, label: str):
    nodes, raw_links = doc.get("nodes"), doc.get("links")
    if not isinstance(nodes, list) or not nodes:
        raise _err(label, "nodes", "must be a non-empty list of {name, kind: gpu|switch|nic|host|cpu}")
    if not isinstance(raw_links, list):
        raise _err(label, "links", "must be a list of {a, b, bandwidth, latency, link_class}")
    limits.GPUS.check(sum(1 for n in nodes if isinstance(n, dict) and n.get("kind") == "gpu"), f"{label}: nodes",
                      "declare fewer GPUs")
    limits.LINKS.check(len(raw_links), f"{label}: links", "declare fewer links")
    vertices: dict[str, str] = {}
    for i, n in enumerate(nodes):
        key = f"nodes[{i}]"
        _check_keys(label, key, n, _NODE_KEYS)
        name = _str(label, f"{key}.name", _need(label, key, n, "name"))
        kind = _need(label, key, n, "kind")
        if kind not in VERTEX_KINDS:
            raise _err(label, f"{key}.kind", f"unknown kind {kind!r}; use one of {', '.join(VERTEX_KINDS)}")
        if name in vertices:
            raise _err(label, f"{key}.name", f"node {name!r} is declared twice; give each node a unique name")
        vertices[name] = kind
    gpus = [v for v, kind in vertices.items() if kind == "gpu"]
    if not gpus:
        raise _err(label, "nodes", "no node has kind gpu; mark the accelerators with kind: gpu")
    links: list[Link] = []
    seen: dict[frozenset, int] = {}
    for i, l in enumerate(raw_links):
        key = f"links[{i}]"
        _check_keys(label, key, l, _LINK_KEYS)
        ends = []
        for end in ("a", "b"):
            v = _str(label, f"{key}.{end}", _need(label, key, l, end))
            if v not in vertices:
                raise _err(label, f"{key}.{end}", f"unknown node {v!r}; declare it under nodes first")
            ends.append(v)
        a, b = ends
        if a == b:
            raise _err(label, f"{key}.b", f"link joins {a!r} to itself; give two different nodes")
        pair = frozenset((a, b))
        if pair in seen:
            raise _err(label, key, f"duplicates links[{seen[pair]}] between {a} and {b}; merge them into one link "
                       "with the summed bandwidth")
        seen[pair] = i
        bw = _parse(label, f"{key}.bandwidth", parse_bandwidth, _need(label, key, l, "bandwidth"), "bandwidth")
        lat = _parse(label, f"{key}.latency", parse_time, _need(label, key, l, "latency"), "latency")
        cls = _str(label, f"{key}.link_class", l.get("link_class", "link"))
        _full_duplex(links, a, b, bw, lat, cls)
    g = nx.Graph()
    g.add_nodes_from(vertices)
    g.add_edges_from((l.src, l.dst) for l in links)
    reach = nx.node_connected_component(g, gpus[0])
    for v in gpus[1:]:
        if v not in reach:
            raise _err(label, "links", f"GPU {v} cannot reach GPU {gpus[0]}; add links that connect them")
    return gpus, vertices, links, {"form": "explicit"}


def check_placement(placement, known_gpus: list[str], where: str) -> list[str]:
    """Validate a placement (GPU names, one per rank): every name a known GPU, none repeated."""
    if not isinstance(placement, (list, tuple)) or not placement:
        raise InputError(f"{where}: must be a non-empty list of GPU names, one per rank")
    known = set(known_gpus)
    seen = set()
    for i, g in enumerate(placement):
        if not isinstance(g, str):
            raise InputError(f"{where}[{i}]: {g!r} is not a GPU name; give each rank's GPU as a string such as "
                             f"{known_gpus[0]!r}")
        if g not in known:
            sample = ", ".join(known_gpus[:4]) + (", …" if len(known_gpus) > 4 else "")
            raise InputError(f"{where}[{i}]: {g!r} is not a GPU of this topology; use GPU names such as {sample}")
        if g in seen:
            raise InputError(f"{where}[{i}]: GPU {g!r} appears twice; give each rank a different GPU")
        seen.add(g)
    return [str(g) for g in placement]


def build_topology(doc, label: str, default_name: str = "topology", source: str = "",
                   placement: list[str] | None = None) -> Topology:
    """Validate a parsed YAML document and build the :class:`Topology` (see the module docstring)."""
    if not isinstance(doc, dict):
        raise InputError(f"{label}: expected a mapping at the top level (name, device, dimensions or "
                         f"nodes/links), got {type(doc).__name__}; see DESIGN.md §3.5")
    hier = "dimensions" in doc
    expl = "nodes" in doc or "links" in doc
    if hier and expl:
        raise _err(label, "dimensions", "a file is either hierarchical (dimensions) or explicit (nodes, links), "
                   "not both; remove one")
    if not hier and not expl:
        raise _err(label, "dimensions", "missing; give dimensions (hierarchical) or nodes and links (explicit)")
    _check_keys(label, "", doc, _TOP_HIER if hier else _TOP_EXPL)
    name = _str(label, "name", doc.get("name", default_name))
    description = doc.get("description") or ""
    if not isinstance(description, str):
        raise _err(label, "description", "must be a string")
    src = doc.get("source") or []
    if isinstance(src, str):
        src = [src]
    if not isinstance(src, list) or not all(isinstance(s, str) for s in src):
        raise _err(label, "source", "must be a string or a list of strings (citations)")
    device = _build_device(doc, label)
    gpus, vertices, links, meta = (_build_hierarchical if hier else _build_explicit)(doc, label)
    chosen = placement if placement is not None else doc.get("placement")
    if chosen is not None:
        gpus_ranked = check_placement(chosen, gpus, f"{label}: placement")
    else:
        gpus_ranked = list(gpus)
    transit = doc.get("gpu_transit", True)
    if not isinstance(transit, bool):
        raise _err(label, "gpu_transit", f"must be true or false, got {transit!r}")
    meta.update({"description": description, "sources": list(src), "vertices": vertices, "all_gpus": list(gpus),
                 "file": label, "gpu_transit": transit})
    return Topology(name, device, gpus_ranked, links, source, meta)


# ---- description (what `ringsim topology show` prints) -----------------------------------------

def describe_topology(topology: Topology, world_size: int | None = None) -> dict:
    """A JSON-ready description: device, vertices, links by class, and the ring of ``world_size`` ranks.

    For the ring (default: every GPU) each hop r → r+1 lists its route (vertices), link classes,
    bottleneck bandwidth, summed latency and whether it shares a directed link with another hop of
    the same ring (then the hops split that link's bandwidth when they transfer at once).
    """
    t = topology
    G = t.num_gpus if world_size is None else world_size
    t.check_world_size(G)
    dev = t.device
    kinds: dict[str, int] = {}
    for kind in (t.meta.get("vertices") or {g: "gpu" for g in t.gpus}).values():
        kinds[kind] = kinds.get(kind, 0) + 1
    classes: dict[str, list] = {}
    for l in t.links:
        classes.setdefault(l.link_class, []).append(l)
    link_rows = []
    for cls, ls in classes.items():
        bws = [l.bandwidth_Bps for l in ls]
        lats = [l.latency_s for l in ls]
        link_rows.append({"link_class": cls, "links": len(ls) // 2 if len(ls) % 2 == 0 else len(ls) / 2,
                          "directed": len(ls), "bandwidth_Bps": min(bws), "bandwidth_max_Bps": max(bws),
                          "latency_s": min(lats), "latency_max_s": max(lats)})
    hops = t.ring_hops(G)
    users: dict[int, list[int]] = {}
    for h in hops:
        for lid in h["route"]:
            users.setdefault(lid, []).append(h["src"])
    shared = {lid: rs for lid, rs in users.items() if len(rs) > 1}
    hop_rows = []
    for h in hops:
        hop_rows.append({"hop": f"{h['src']}->{h['dst']}", "src": h["src"], "dst": h["dst"],
                         "src_gpu": h["src_gpu"], "dst_gpu": h["dst_gpu"], "path": h["path"],
                         "route": h["route"], "links": len(h["route"]), "link_classes": h["link_classes"],
                         # a hop to itself (a one-rank ring) crosses no link: no bottleneck (None, not inf)
                         "bottleneck_Bps": h["bottleneck_Bps"] if h["route"] else None, "latency_s": h["latency_s"],
                         "shared": any(lid in shared for lid in h["route"])})
    finite = [h["bottleneck_Bps"] for h in hops if h["route"]]
    return {
        "name": t.name,
        "description": t.meta.get("description", ""),
        "sources": t.meta.get("sources", []),
        "file": t.meta.get("file", t.source),
        "form": t.meta.get("form", ""),
        "gpus": t.num_gpus,
        "device": {"name": dev.name, "peak_flops": dev.peak_flops, "efficiency": dev.efficiency,
                   "memory_bytes": dev.memory_bytes, "tile": list(dev.tile) if dev.tile else None,
                   "kernel_overhead_s": dev.kernel_overhead_s, "memory_bandwidth_Bps": dev.memory_bandwidth_Bps,
                   "launch_s": dev.launch_s, "kernels": dict(dev.kernel_profiles),
                   "default_kernels": dev.default_kernels, "p2p_efficiency": dict(dev.p2p_efficiency),
                   "sms": dev.sms, "p2p_sms": dict(dev.p2p_sms)},
        "vertices": kinds,
        "dimensions": t.meta.get("dimensions"),
        "link_classes": link_rows,
        "ring": {
            "world_size": G,
            "shares_links": bool(shared),
            "bottleneck_Bps": min(finite) if finite else None,
            "max_latency_s": max((h["latency_s"] for h in hops), default=0.0),
            "shared_links": [{"link": lid, "src": t.links[lid].src, "dst": t.links[lid].dst,
                              "link_class": t.links[lid].link_class, "hops": rs} for lid, rs in sorted(shared.items())],
            "hops": hop_rows,
        },
    }
