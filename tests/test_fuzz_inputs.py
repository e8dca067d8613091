"""Fuzzing the readers of user files: topology files and sweep study files.

Hypothesis starts from valid files and damages them the ways files get damaged or forged: a value
of the wrong type, a missing or unknown key, NaN and infinities, huge and negative numbers, deep
nesting, a file cut off part way. Every reader must then either give a correct result (checked,
not just "it ran") or refuse with one InputError line that names the file — never another
exception. Most cases run in-process through the library entry points; a few run the installed
command line in a subprocess to check exit code 2, one stderr line and no traceback end to end.
"""
from __future__ import annotations

import copy
import io
import json
import math
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ringsim.limits import RANGES
from ringsim.topoload import build_topology, describe_topology, load_topology
from ringsim.units import InputError
from ringsim.yamlio import load_yaml

FUZZ = settings(max_examples=500, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

DEVICE = {"name": "X", "peak_flops": "100 TFLOP/s", "efficiency": 0.5, "memory": "10 GB", "tile": [64, 64],
          "kernel_overhead": "2 us"}
VALID_TOPOLOGIES = [
    {"name": "two-level", "device": DEVICE,
     "dimensions": [{"topology": "switch", "size": 4, "bandwidth": "100 GB/s", "latency": "1 us",
                     "link_class": "nvlink"},
                    {"topology": "ring", "size": 3, "bandwidth": "25 GB/s", "latency": "2 us", "link_class": "ib"}]},
    {"name": "fc", "device": DEVICE,
     "dimensions": [{"topology": "fully-connected", "size": 4, "bandwidth": 1e11, "latency": 1e-6}]},
    {"name": "tree", "device": DEVICE, "placement": ["g0", "g1", "g2"],
     "nodes": [{"name": "g0", "kind": "gpu"}, {"name": "g1", "kind": "gpu"}, {"name": "g2", "kind": "gpu"},
               {"name": "h", "kind": "host"}],
     "links": [{"a": "g0", "b": "h", "bandwidth": "31 GB/s", "latency": "2 us", "link_class": "pcie"},
               {"a": "g1", "b": "h", "bandwidth": "31 GB/s", "latency": "2 us", "link_class": "pcie"},
               {"a": "g2", "b": "h", "bandwidth": "31 GB/s", "latency": "2 us", "link_class": "pcie"}]},
]

HOSTILE = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 1, 2, 3, 8, 2**31, 2**63, 10**30, 10**400, -(10**30),
                     0.0, -0.0, 1e-300, 1e308, float("nan"), float("inf"), float("-inf"),
                     "", " ", "inf", "nan", "-inf", "1e999", "1e999 GB/s", "nan us", ".inf", "NaN GB/s",
                     "0 GB/s", "-5 us", "450 GB/s", "3 us", "989 TFLOP/s", "80 GB", "switch", "ring",
                     "fully-connected", "gpu", "g0", "h", "x" * 300, [], {}, [1, 2], [128, 128], [0, 1],
                     [[[[[]]]]], {"a": 1}, {"topology": "switch"}, ["g0", "g0"], ["g9"]]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)


BENIGN = st.sampled_from([1, 2, 3, 4, 5, 6, 8, 16, 0.25, 0.5, 0.9, 1.0, 1e9, 1e12, 1e-6, "1 GB/s", "400 Gb/s",
                          "900 GB/s", "0.5 us", "10 ms", "0 us", "312 TFLOP/s", "141 GB", "ring", "switch",
                          "fully-connected", "causal", "full", "sliding:1024", "zigzag", "contiguous,striped",
                          "2K", "8K", "4", "fwd+bwd", "des", "auto", "fp32", [4], [32, 32], "nvlink"])


def _paths(doc, prefix=()):
    """Every (path, value) in a nested dict/list document."""
    yield prefix, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


def _set(doc, path, value):
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def _delete(doc, path):
    node = doc
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]


# for studies, valid numbers stay small: a valid 2^30-token point is a real (seconds-long) simulation,
# not a reader's problem; the out-of-range ones (2^63, 10^30, ...) stay
HOSTILE_SMALL = HOSTILE.filter(lambda v: not (isinstance(v, int) and not isinstance(v, bool)
                                             and 1 << 16 < abs(v) <= 1 << 31))


@st.composite
def damaged(draw, valid_docs, hostile=HOSTILE):
    """A valid document with up to two damages."""
    doc = copy.deepcopy(draw(st.sampled_from(valid_docs)))
    for _ in range(draw(st.integers(0, 2))):  # none: the valid file itself, whose result is checked
        paths = [p for p, _ in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        kind = draw(st.sampled_from(["replace", "replace", "benign", "benign", "delete", "unknown-key", "deepen"]))
        try:
            if kind == "replace":
                _set(doc, path, draw(hostile))
            elif kind == "benign":  # another plausible value: small sizes, real figures, other names
                _set(doc, path, draw(BENIGN))
            elif kind == "delete":
                _delete(doc, path)
            elif kind == "unknown-key":
                _set(doc, path[:-1] + ("colour",), "red") if isinstance(doc, dict) else None
            else:
                v = draw(hostile)
                for _ in range(draw(st.integers(1, 60))):
                    v = [v]
                _set(doc, path, v)
        except (KeyError, IndexError, TypeError):
            pass
    return doc


def _as_text(doc, cut=None) -> str:
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    return text if cut is None else text[:cut]


def _check_topology(topo, label):
    """What a loaded topology must be: finite, in-range figures; every GPU reachable."""
    assert topo.num_gpus >= 1
    dev = topo.device
    assert math.isfinite(dev.peak_flops) and RANGES["peak_flops"][0] <= dev.peak_flops <= RANGES["peak_flops"][1]
    assert 0 < dev.efficiency <= 1 and math.isfinite(dev.memory_bytes) and dev.memory_bytes > 0
    assert math.isfinite(dev.kernel_overhead_s) and dev.kernel_overhead_s >= 0
    for link in topo.links:
        assert math.isfinite(link.bandwidth_Bps) and link.bandwidth_Bps >= 1.0
        assert math.isfinite(link.latency_s) and 0 <= link.latency_s <= 3600
    desc = describe_topology(topo, min(topo.num_gpus, 8))  # routes exist, figures are numbers
    json.dumps(desc, allow_nan=False)


def _one_line(e: InputError, label: str):
    msg = str(e)
    assert "\n" not in msg and msg.strip() == msg and label in msg, msg


@FUZZ
@given(doc=damaged(VALID_TOPOLOGIES), cut=st.one_of(st.none(), st.none(), st.none(), st.integers(0, 400)))
def test_fuzzed_topology_file_loads_correctly_or_is_one_line(doc, cut):
    label = "fuzzed.yaml"
    try:
        parsed = load_yaml(_as_text(doc, cut), label, "see DESIGN.md §3.5")
        topo = build_topology(parsed, label)
    except InputError as e:
        _one_line(e, label)
        event("refused")
        return
    event("loaded")
    _check_topology(topo, label)


@FUZZ
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_arbitrary_text_as_a_topology_file(text):
    try:
        topo = build_topology(load_yaml(text, "any.yaml", "fix"), "any.yaml")
    except InputError as e:
        _one_line(e, "any.yaml")
        return
    _check_topology(topo, "any.yaml")


def test_valid_topologies_load(tmp_path):
    for doc in VALID_TOPOLOGIES:
        p = tmp_path / f"{doc['name']}.yaml"
        p.write_text(_as_text(doc))
        _check_topology(load_topology(str(p)), str(p))


# ---- sweep study files -----------------------------------------------------------------------------

VALID_STUDIES = [
    {"seq_len": ["4K", 8192], "schedules": "contiguous,zigzag", "topology": "dgx-h100-8", "model": "llama3-8b",
     "mask": ["causal"], "phase": "fwd", "bw_scale": [1, 0.5], "batch": 1, "dtype": "bf16", "engine": "fast"},
    {"seq_len": "4K", "world_size": [4, 8], "schedules": ["zigzag"], "mask": "sliding:4096", "phase": ["fwd"]},
]


def _run_cli(argv):
    from ringsim.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(doc=damaged(VALID_STUDIES, HOSTILE_SMALL), cut=st.one_of(st.none(), st.none(), st.none(), st.integers(0, 200)))
def test_fuzzed_study_file_runs_correctly_or_is_one_line(tmp_path_factory, doc, cut):
    from ringsim.sweep import load_study

    path = tmp_path_factory.mktemp("study") / "study.yaml"
    path.write_text(_as_text(doc, cut))
    try:
        load_study(str(path))
    except InputError as e:
        _one_line(e, str(path))
    code, out, err = _run_cli(["sweep", "--study", str(path), "-j", "1", "--format", "json"])
    assert "Traceback" not in err
    if code == 2:
        assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("ringsim"), err
        event("refused")
        return
    event("ran")
    assert code == 0, (code, err)
    rows = json.loads(out)["results"]
    assert rows and all(set(r) >= {"schedule", "seq_len", "error"} for r in rows)
    for r in rows:  # a row is a result with finite positive figures, or an error saying why not
        if r["error"] is None:
            assert isinstance(r["makespan_s"], float) and 0 < r["makespan_s"] < math.inf
        else:
            assert isinstance(r["error"], str) and "\n" not in r["error"]


# ---- a few through the installed command line -------------------------------------------------------

CLI_CASES = [
    ("topology", "dimensions:\n  - {topology: switch, size: 8, bandwidth: .inf, latency: 1 us}\n"
                 "device: {name: X, peak_flops: 1e15, efficiency: 0.5, memory: 80 GB}\n", "bandwidth"),
    ("topology", "dimensions:\n  - {topology: switch, size: 8, bandwidth: 1e9, latency: .nan}\n"
                 "device: {name: X, peak_flops: 1e15, efficiency: 0.5, memory: 80 GB}\n", "latency"),
    ("topology", "dimensions:\n  - {topology: fully-connected, size: 4096, bandwidth: 1e9, latency: 1e-6}\n"
                 "device: {name: X, peak_flops: 1e15, efficiency: 0.5, memory: 80 GB}\n", "RINGSIM_MAX_LINKS"),
    ("topology", "a: " + "[" * 5000 + "]" * 5000 + "\n", "RINGSIM_MAX_YAML_DEPTH"),
    ("topology", "dimensions:\n  - {topology: switch, size: 8, bandw", "YAML"),
    ("study", "seq_len: [.nan]\n", "finite"),
    ("study", "batch: 1e999\n", "batch"),
    ("study", "seq_len: " + "[" * 100 + "1" + "]" * 100 + "\n", "RINGSIM_MAX_YAML_DEPTH"),
    ("study", "mask: diagonal\n", "unknown mask"),
]


@pytest.mark.parametrize("kind,text,needle", CLI_CASES)
def test_hostile_files_through_the_command_line(tmp_path, kind, text, needle):
    path = tmp_path / f"{kind}.yaml"
    path.write_text(text)
    argv = ["topology", "show", str(path)] if kind == "topology" else ["sweep", "--study", str(path), "-j", "1"]
    proc = subprocess.run([sys.executable, "-m", "ringsim.cli", *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and needle in lines[0], lines
