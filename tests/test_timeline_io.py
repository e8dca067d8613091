"""A timeline survives every file form it is written in: rows, dtypes and run metadata."""
from __future__ import annotations

import pandas as pd
import pytest

from optional import require
from ringsim.engines import simulate_ring
from ringsim.schedules import Plan
from ringsim.timeline import read_timeline
from ringsim.topology import Device, Link, Topology
from ringsim.units import InputError
from ringsim.workload import ModelSpec, Workload


def _timeline():
    links = [Link(0, "a", "sw", 1e9, 1e-6), Link(1, "sw", "a", 1e9, 1e-6),
             Link(2, "b", "sw", 1e9, 1e-6), Link(3, "sw", "b", 1e9, 1e-6),
             Link(4, "c", "sw", 1e9, 1e-6), Link(5, "sw", "c", 1e9, 1e-6)]
    topo = Topology("tri", Device("d", 1e12, 0.5, 1e9), ["a", "b", "c"], links)
    plan = Plan("zigzag", 3, 36, "causal")
    wl = Workload(ModelSpec("toy", 1, 2, 2, 8), 36, dtype="fp32")
    tl = simulate_ring(plan, wl, topo, phase="fwd+bwd", engine="des").timeline
    tl.meta["note"] = "µs and ünïcode survive"
    return tl


@pytest.mark.parametrize("ext", ["json", "csv", "parquet"])
def test_round_trip(tmp_path, ext):
    if ext == "parquet":
        require("pyarrow")
    tl = _timeline()
    p = tmp_path / f"t.{ext}"
    tl.write(p)
    back = read_timeline(p)
    pd.testing.assert_frame_equal(back.df, tl.df, check_categorical=False, check_exact=(ext != "json"),
                                  rtol=1e-12)
    assert list(back.df["phase"].astype(str)) == list(tl.df["phase"].astype(str))
    assert back.meta["note"] == "µs and ünïcode survive"
    assert back.meta["schedule"] == "zigzag" and back.meta["world_size"] == 3
    assert back.makespan_s() == pytest.approx(tl.makespan_s(), rel=1e-12)


def test_unreadable_parquet_is_one_line(tmp_path):
    require("pyarrow")
    p = tmp_path / "bad.parquet"
    p.write_bytes(b"not a parquet file at all")
    with pytest.raises(InputError) as err:
        read_timeline(p)
    assert "not a readable trace" in str(err.value) and "\n" not in str(err.value)
