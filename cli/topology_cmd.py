"""`ringsim topology list | show`: the machines ringsim knows and how a ring maps onto them."""
from __future__ import annotations

import click

from ringsim.topoload import describe_topology, list_presets, load_topology
from ringsim.units import format_bytes, format_seconds

from .common import emit, render_table, to_json


def _bw(bps: float | None) -> str:
    if bps is None:
        return "-"
    return format_bytes(bps) + "/s"


def _lat(s: float) -> str:
    return "0" if s == 0 else format_seconds(s)


def _fmt_option(f):
    f = click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
                     help="Write to this file (atomically) instead of stdout.")(f)
    return click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
                        show_default=True)(f)


@click.group()
def topology():
    """Topology presets and files: list them, or show one's devices, links and ring routes."""


@topology.command("list")
@_fmt_option
def list_cmd(fmt, output):
    """Every preset: name, GPUs, device, description."""
    rows = list_presets()
    if fmt == "json":
        emit(to_json({"presets": rows}), output)
    else:
        emit(render_table(rows, ["name", "gpus", "device", "description"]), output)


@topology.command("show")
@click.argument("name")
@click.option("--world-size", type=int, default=None, help="Ring size [default: every GPU of the topology].")
@_fmt_option
def show(name, world_size, fmt, output):
    """Devices, links by class, and every hop of a ring of --world-size ranks: route, link
    classes, bottleneck bandwidth, latency, and whether hops share a directed link.

    NAME is a preset (see `ringsim topology list`) or a path to a YAML file."""
    doc = describe_topology(load_topology(name), world_size)
    if fmt == "json":
        emit(to_json(doc), output)
        return
    dev = doc["device"]
    out = [f"topology {doc['name']} ({doc['form']}, {doc['file']}): {doc['description']}"]
    out += [f"  source: {s}" for s in doc["sources"]]
    tile = "x".join(map(str, dev["tile"])) if dev["tile"] else "none"
    out.append(f"device: {dev['name']}: peak {dev['peak_flops'] / 1e12:.4g} TFLOP/s x efficiency "
               f"{dev['efficiency']:g}, memory {format_bytes(dev['memory_bytes'])}, tile {tile}, "
               f"kernel overhead {_lat(dev['kernel_overhead_s'])}")
    if dev.get("sms"):
        held = ", ".join(f"{c} {n}" for c, n in (dev.get("p2p_sms") or {}).items()) or "none"
        out.append(f"  {dev['sms']} SMs; an NCCL send/recv in flight holds (SMs, by link class): {held}")
    out.append(f"vertices: {doc['gpus']} ranked GPUs; " + ", ".join(f"{n} {k}" for k, n in doc["vertices"].items()))
    if doc["dimensions"]:
        out.append("dimensions (innermost first): " + "; ".join(
            f"{d['topology']} x{d['size']} {d['link_class']}" for d in doc["dimensions"]))
    out.append("\nlinks (full duplex; bandwidth and latency per direction, per link):")
    out.append(render_table([{
        "class": r["link_class"], "links": r["links"], "directed": r["directed"],
        "bandwidth": _bw(r["bandwidth_Bps"]) + ("" if r["bandwidth_max_Bps"] == r["bandwidth_Bps"]
                                                else " .. " + _bw(r["bandwidth_max_Bps"])),
        "latency": _lat(r["latency_s"]) + ("" if r["latency_max_s"] == r["latency_s"]
                                           else " .. " + _lat(r["latency_max_s"])),
    } for r in doc["link_classes"]]))
    ring = doc["ring"]
    out.append(f"ring of {ring['world_size']} ranks (hop r -> r+1):")
    out.append(render_table([{
        "hop": h["hop"], "from": h["src_gpu"], "to": h["dst_gpu"], "links": h["links"],
        "classes": ",".join(h["link_classes"]) or "-", "bottleneck": _bw(h["bottleneck_Bps"]) if h["route"] else "-",
        "latency": _lat(h["latency_s"]), "shared": "yes" if h["shared"] else "no",
        "route": " > ".join(h["path"]) or "-",
    } for h in ring["hops"]], ["hop", "from", "to", "links", "classes", "bottleneck", "latency", "shared", "route"]))
    out.append(f"ring bottleneck {_bw(ring['bottleneck_Bps'])}, worst hop latency {_lat(ring['max_latency_s'])}; "
               + (f"{len(ring['shared_links'])} directed links carry more than one hop (contention: "
                  + ", ".join(f"{s['src']}->{s['dst']} by hops from ranks {s['hops']}" for s in ring["shared_links"][:4])
                  + (", ..." if len(ring["shared_links"]) > 4 else "") + ")"
                  if ring["shares_links"] else "no two hops share a directed link (contention-free ring)"))
    emit("\n".join(out) + "\n", output)
