"""Topology files, presets, routes, what-ifs and `ringsim topology list|show`."""
import io
import json
import subprocess
import sys
import textwrap
from contextlib import redirect_stderr, redirect_stdout

import pytest

from ringsim.cli import main
from ringsim.topoload import describe_topology, list_presets, load_topology, preset_names
from ringsim.units import InputError

PRESET_GPUS = {
    "dgx-a100-8": 8, "dgx-h100-8": 8, "dgx-h200-8": 8, "dgx-h800-8": 8, "dgx-h100-2n": 16, "dgx-h100-4n": 32,
    "dgx-h100-16n": 128, "dgx-h100-128n": 1024, "pcie-gen4-4": 4, "2node-shared-nic": 8, "localhost-cpu": 4,
    "dgx-h100-128n-fattree-2to1": 1024, "dgx-h100-128n-fattree-4to1": 1024,
}

DEVICE = {"name": "X", "peak_flops": "100 TFLOP/s", "efficiency": 0.5, "memory": "10 GB"}


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(argv))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


# ---- presets ------------------------------------------------------------------------------------

def test_preset_list_is_complete():
    assert preset_names() == sorted(PRESET_GPUS)
    rows = {r["name"]: r for r in list_presets()}
    assert {n: r["gpus"] for n, r in rows.items()} == PRESET_GPUS
    assert all(r["description"] and r["device"] for r in rows.values())


@pytest.mark.parametrize("name", sorted(PRESET_GPUS))
def test_preset_loads(name):
    t = load_topology(name)
    assert t.num_gpus == PRESET_GPUS[name]
    assert t.meta["sources"], "every preset cites its figures"
    # every physical link is two directed Links with equal figures, ids = list index
    assert [l.id for l in t.links] == list(range(len(t.links)))
    for fwd, back in zip(t.links[::2], t.links[1::2]):
        assert (fwd.src, fwd.dst) == (back.dst, back.src)
        assert (fwd.bandwidth_Bps, fwd.latency_s, fwd.link_class) == (back.bandwidth_Bps, back.latency_s, back.link_class)


def test_device_figures_parsed():
    d = load_topology("dgx-h200-8").device
    assert (d.peak_flops, d.efficiency, d.memory_bytes, d.tile, d.kernel_overhead_s) == (989e12, 0.75, 141e9, (128, 128), 0.0)
    assert load_topology("dgx-a100-8").device.peak_flops == 312e12


def test_two_node_routes():
    t = load_topology("dgx-h100-2n")
    assert t.gpus[:2] == ["n0.g0", "n0.g1"] and t.gpus[8] == "n1.g0"
    classes = [l.link_class for l in t.links]
    assert classes.count("nvlink") == 32 and classes.count("ib") == 32  # 16 + 16 full-duplex links
    intra = t.route(0, 1)
    assert [t.links[i].link_class for i in intra] == ["nvlink", "nvlink"]
    assert t.route_bottleneck_Bps(intra) == 450e9
    assert t.route_latency_s(intra) == pytest.approx(3e-6, rel=1e-12)
    inter = t.route(7, 8)  # n0.g7 -> n1.g0: one NVSwitch hop and one rail hop
    assert sorted(t.links[i].link_class for i in inter) == ["ib", "ib", "nvlink", "nvlink"]
    assert t.route_bottleneck_Bps(inter) == 50e9  # 400 Gb/s NDR
    assert t.route_latency_s(inter) == pytest.approx(2 * 1.5e-6 + 2 * 0.6e-6, rel=1e-12)


def test_outer_switch_dimension_is_rail_optimised():
    t = load_topology("dgx-h100-4n")
    rail3 = sorted(l.src for l in t.links if l.dst == "sw1:n*.g3")
    assert rail3 == ["n0.g3", "n1.g3", "n2.g3", "n3.g3"]
    assert sorted(l.src for l in t.links if l.dst == "sw0:n2.g*") == [f"n2.g{i}" for i in range(8)]
    assert sum(1 for v, k in t.meta["vertices"].items() if k == "switch") == 4 + 8


@pytest.mark.parametrize("name", ["dgx-a100-8", "dgx-h100-8", "dgx-h200-8", "dgx-h100-2n", "dgx-h100-4n",
                                  "dgx-h100-16n", "dgx-h100-128n", "pcie-gen4-4"])
def test_single_ring_on_dgx_is_contention_free(name):
    t = load_topology(name)
    assert t.ring_shares_links(t.num_gpus) is False


def test_shared_nic_alternating_placement_contends():
    t = load_topology("2node-shared-nic")
    assert t.gpus[:3] == ["n0.g0", "n1.g0", "n0.g1"]  # the file's alternating placement
    assert t.ring_shares_links(8) is True
    doc = describe_topology(t)
    shared = {(s["src"], s["dst"]): s["hops"] for s in doc["ring"]["shared_links"]}
    assert shared[("n0.nic", "ib-sw")] == [0, 2, 4, 6]
    assert shared[("ib-sw", "n0.nic")] == [1, 3, 5, 7]
    assert all(h["shared"] for h in doc["ring"]["hops"])
    # every hop: 4 PCIe links (2.5 us) + 2 IB links (0.6 us), bottleneck the 200 Gb/s NIC
    assert all(h["latency_s"] == pytest.approx(11.2e-6, rel=1e-12) and h["bottleneck_Bps"] == 25e9
               for h in doc["ring"]["hops"])
    natural = load_topology("2node-shared-nic", placement=t.meta["all_gpus"])
    assert natural.ring_shares_links(8) is False


# ---- hierarchical semantics on a small file --------------------------------------------------------

def _write(tmp_path, text, name="t.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def test_hierarchical_ring_fully_connected_switch(tmp_path):
    path = _write(tmp_path, """
        name: odd
        device: {name: X, peak_flops: "1 TFLOP/s", efficiency: 1, memory: "1 GB"}
        dimensions:
          - {topology: ring, size: 4, bandwidth: "8 GB/s", latency: "1 us"}
          - {topology: fully-connected, size: 3, bandwidth: "16 Gb/s", latency: "2 us", link_class: fc}
          - {topology: switch, size: 2, bandwidth: "1 GB/s", latency: 0}
    """)
    t = load_topology(path)
    assert t.num_gpus == 24
    # global index = i0 + 4 * (i1 + 3 * i2): index 5 = (1, 1, 0), index 23 = (3, 2, 1)
    assert t.gpus[5] == "p0.n1.g1" and t.gpus[23] == "p1.n2.g3"
    by_class = {}
    for l in t.links:
        by_class[l.link_class] = by_class.get(l.link_class, 0) + 1
    # ring: 4 links × 6 groups; fully-connected: 3 pairs × 8 groups; switch: 2 members × 12 groups
    assert by_class == {"dim0": 48, "fc": 48, "dim2": 48}
    assert t.links[0].bandwidth_Bps == 8e9 and by_class and t.links[48].bandwidth_Bps == 2e9
    # ring neighbours 0 and 3 are adjacent (wrap), 0 and 2 are two hops apart
    assert len(t.route(0, 3)) == 1 and len(t.route(0, 2)) == 2
    assert len(t.route(0, 12)) == 2  # across the outer switch
    assert t.meta["dimensions"][1]["link_class"] == "fc"


def test_ring_of_two_is_one_link(tmp_path):
    path = _write(tmp_path, """
        device: {name: X, peak_flops: 1e12, efficiency: 0.5, memory: 1e9}
        dimensions: [{topology: ring, size: 2, bandwidth: 1e9, latency: 0}]
    """)
    t = load_topology(path)
    assert len(t.links) == 2 and t.name == "t" and t.gpus == ["g0", "g1"]


# ---- validation ----------------------------------------------------------------------------------

HIER = """
name: bad
device: {name: X, peak_flops: "1 TFLOP/s", efficiency: 0.5, memory: "1 GB"}
dimensions:
  - {topology: switch, size: 4, bandwidth: "10 GB/s", latency: "1 us"}
"""
EXPL = """
name: bad
device: {name: X, peak_flops: "1 TFLOP/s", efficiency: 0.5, memory: "1 GB"}
nodes:
  - {name: a, kind: gpu}
  - {name: b, kind: gpu}
  - {name: c, kind: gpu}
  - {name: h, kind: host}
links:
  - {a: a, b: h, bandwidth: "1 GB/s", latency: "1 us", link_class: pcie}
  - {a: b, b: h, bandwidth: "1 GB/s", latency: "1 us", link_class: pcie}
  - {a: c, b: h, bandwidth: "1 GB/s", latency: "1 us", link_class: pcie}
"""


@pytest.mark.parametrize("base,old,new,key,fix", [
    (HIER, "name: bad", "name: bad\ncolour: red", "colour", "allowed keys"),
    (HIER, "size: 4,", "size: 4, bandwith: 1,", "dimensions[0].bandwith", "allowed keys"),
    (HIER, "memory:", "mem: 1, memory:", "device.mem", "allowed keys"),
    (EXPL, "{name: h, kind: host}", "{name: h, kind: host, rack: 2}", "nodes[3].rack", "allowed keys"),
    (EXPL, 'link_class: pcie}\n  - {a: b', 'link_class: pcie, speed: 1}\n  - {a: b', "links[0].speed", "allowed keys"),
    (HIER, '"10 GB/s"', '"0 GB/s"', "dimensions[0].bandwidth", "must be positive"),
    (HIER, '"10 GB/s"', "-5", "dimensions[0].bandwidth", "must be positive"),
    (EXPL, '{a: c, b: h, bandwidth: "1 GB/s"', '{a: c, b: h, bandwidth: "0 B/s"', "links[2].bandwidth", "must be positive"),
    (HIER, '"1 us"', '"-1 us"', "dimensions[0].latency", "not a time"),
    (HIER, '"1 us"', "-0.5", "dimensions[0].latency", "must not be negative"),
    (HIER, '"10 GB/s"', '"10 GB"', "dimensions[0].bandwidth", "450 GB/s"),
    (HIER, '"1 us"', '"1 parsec"', "dimensions[0].latency", "3 us"),
    (HIER, '"1 TFLOP/s"', '"fast"', "device.peak_flops", "989 TFLOP/s"),
    (HIER, "efficiency: 0.5", "efficiency: 1.5", "device.efficiency", "(0, 1]"),
    (HIER, "size: 4", "size: 0", "dimensions[0].size", ">= 1"),
    (HIER, "topology: switch", "topology: torus", "dimensions[0].topology", "fully-connected"),
    (EXPL, "  - {a: c, b: h, bandwidth: \"1 GB/s\", latency: \"1 us\", link_class: pcie}\n", "", "links",
     "GPU c cannot reach GPU a"),
    (EXPL, "{a: c, b: h,", "{a: c, b: z,", "links[2].b", "declare it under nodes"),
    (EXPL, "{name: h, kind: host}", "{name: h, kind: router}", "nodes[3].kind", "gpu, switch, nic, host, cpu"),
    (HIER, "name: bad", "name: bad\nplacement: [g0, g9]", "placement[1]", "not a GPU"),
    (HIER, "name: bad", "name: bad\nplacement: [g0, g1, g0]", "placement[2]", "appears twice"),
    (HIER, 'device: {name: X, peak_flops: "1 TFLOP/s", efficiency: 0.5, memory: "1 GB"}\n', "", "device",
     "add device:"),
    (HIER, "name: bad", "name: bad\nnodes: []", "dimensions", "not both"),
])
def test_validation_errors_name_file_and_key(tmp_path, base, old, new, key, fix):
    assert old in base
    path = _write(tmp_path, base.replace(old, new, 1), "bad.yaml")
    with pytest.raises(InputError) as e:
        load_topology(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(path + ": "), msg
    assert f" {key}:" in msg or f": {key} " in msg or f": {key}:" in msg, msg
    assert fix in msg, msg


def test_good_bases_load(tmp_path):
    assert load_topology(_write(tmp_path, HIER, "h.yaml")).num_gpus == 4
    assert load_topology(_write(tmp_path, EXPL, "e.yaml")).gpus == ["a", "b", "c"]


def test_yaml_syntax_error(tmp_path):
    path = _write(tmp_path, HIER + "  - {topology: switch, size: [\n", "bad.yaml")
    with pytest.raises(InputError) as e:
        load_topology(path)
    msg = str(e.value)
    assert msg.startswith(path + ": YAML syntax error at line") and "\n" not in msg


def test_unknown_name_lists_presets():
    with pytest.raises(InputError) as e:
        load_topology("dgx-h900-8")
    assert "dgx-h100-8" in str(e.value) and "2node-shared-nic" in str(e.value)


def test_placement_argument_and_world_size():
    t = load_topology("dgx-h100-8", placement=["g3", "g1"])
    assert t.gpus == ["g3", "g1"] and t.num_gpus == 2
    with pytest.raises(InputError, match="fewer than world size 3"):
        t.check_world_size(3)
    with pytest.raises(InputError, match=r"placement\[1\].*'g8'"):
        load_topology("dgx-h100-8", placement=["g0", "g8"])


# ---- what-ifs ------------------------------------------------------------------------------------

def test_degrade_link_scales_both_directions_only():
    t = load_topology("dgx-h100-2n")
    d = t.degrade_link("n0.g7", "sw1:n*.g7", 0.25)
    changed = [(a, b) for a, b in zip(t.links, d.links) if a != b]
    assert len(changed) == 2
    assert {(b.src, b.dst) for _, b in changed} == {("n0.g7", "sw1:n*.g7"), ("sw1:n*.g7", "n0.g7")}
    assert all(b.bandwidth_Bps == 12.5e9 and b.latency_s == a.latency_s for a, b in changed)
    assert d.route_bottleneck_Bps(d.route(7, 8)) == 12.5e9
    assert d.route_bottleneck_Bps(d.route(15, 0)) == 12.5e9  # the return direction of the same cable
    assert d.route_bottleneck_Bps(d.route(0, 1)) == 450e9
    assert t.route_bottleneck_Bps(t.route(7, 8)) == 50e9  # the original is untouched
    with pytest.raises(InputError, match="no link between"):
        t.degrade_link("n0.g0", "n1.g0", 0.5)
    with pytest.raises(InputError, match="positive"):
        t.degrade_link("n0.g7", "sw1:n*.g7", 0)


def test_with_placement_reroutes_ring():
    t = load_topology("2node-shared-nic")
    nat = t.with_placement(t.meta["all_gpus"])
    assert nat.gpus == ["n0.g0", "n0.g1", "n0.g2", "n0.g3", "n1.g0", "n1.g1", "n1.g2", "n1.g3"]
    assert nat.ring_shares_links(8) is False and t.ring_shares_links(8) is True
    assert [h["bottleneck_Bps"] for h in nat.ring_hops(8)] == [31e9, 31e9, 31e9, 25e9, 31e9, 31e9, 31e9, 25e9]
    # a subset of a topology loaded with a subset placement can still name the other GPUs
    small = load_topology("dgx-h100-8", placement=["g0", "g1"]).with_placement(["g7", "g6", "g5"])
    assert small.num_gpus == 3
    with pytest.raises(InputError, match="appears twice"):
        t.with_placement(["n0.g0", "n0.g0"])
    with pytest.raises(InputError, match="not a GPU"):
        t.with_placement(["n0.nic"])


# ---- CLI -----------------------------------------------------------------------------------------

def test_cli_list_json():
    code, out, err = run_cli("topology", "list", "--format", "json")
    assert code == 0, err
    assert {r["name"]: r["gpus"] for r in json.loads(out)["presets"]} == PRESET_GPUS


def test_cli_show_json_and_table():
    code, out, err = run_cli("topology", "show", "dgx-h100-2n", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["gpus"] == 16 and doc["ring"]["world_size"] == 16 and doc["ring"]["shares_links"] is False
    assert doc["ring"]["bottleneck_Bps"] == 50e9
    assert {r["link_class"]: r["links"] for r in doc["link_classes"]} == {"nvlink": 16, "ib": 16}
    assert doc["ring"]["hops"][7]["link_classes"] == ["ib", "nvlink"]
    code, out, err = run_cli("topology", "show", "2node-shared-nic", "--world-size", "4")
    assert code == 0, err
    assert "n0.nic->ib-sw by hops from ranks [0, 2]" in out and "\n3->0 " in out


def test_cli_bad_file_exit_2(tmp_path):
    path = _write(tmp_path, HIER.replace("size: 4,", "size: 4, colour: red,"), "bad.yaml")
    # the ringsim installed for the interpreter running the tests, wherever its environment lives
    proc = subprocess.run([sys.executable, "-m", "ringsim.cli", "topology", "show", path], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and path in lines[0] and "dimensions[0].colour" in lines[0]
    code, out, err = run_cli("topology", "show", "dgx-h100-8", "--world-size", "9")
    assert code == 2 and "fewer than world size 9" in err
