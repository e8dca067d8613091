"""The sweep's optional backends: Parquet output (pyarrow) and the dask executor.

Both are optional extras (``pip install 'ringsim[parquet,dask]'``); the tests skip where the
package is not installed, except in CI, which installs both and fails a test that would skip
(see optional.py), and check that the backend returns exactly the rows of the default path.
"""
from __future__ import annotations

import io

import pandas as pd
import pytest

from optional import require
from ringsim.sweep import Study, run_study
from test_cli_foundation import run

def test_parquet_output_equals_csv(tmp_path):
    require("pyarrow")
    args = ["sweep", "--topology", "dgx-h100-8", "--model", "llama3-8b", "--seq-len", "16K,64K",
            "--schedules", "contiguous,zigzag", "--jobs", "1"]
    code, out, err = run(*args, "--format", "csv")
    assert code == 0, err
    pq = tmp_path / "s.parquet"
    code, out2, err2 = run(*args, "--format", "parquet", "--output", str(pq))
    assert code == 0, err2
    got = pd.read_parquet(pq)
    want = pd.read_csv(io.StringIO(out))
    assert list(got.columns) == list(want.columns)
    assert len(got) == 4
    for col in ("seq_len", "schedule", "makespan_s", "speedup_vs_contiguous"):
        a, b = got[col].tolist(), want[col].tolist()
        if isinstance(a[0], float):
            assert a == pytest.approx(b, rel=1e-12)
        else:
            assert a == b

def test_dask_executor_returns_the_local_rows():
    require("dask.distributed")
    pts = Study(seq_lens=[16384, 65536], schedules=["contiguous", "zigzag"]).points()
    local = run_study(pts, jobs=1)
    remote = run_study(pts, jobs=2, executor="dask")
    assert [(r["seq_len"], r["schedule"]) for r in remote] == [(r["seq_len"], r["schedule"]) for r in local]
    assert [r["makespan_s"] for r in remote] == [r["makespan_s"] for r in local]
    assert [r["speedup_vs_contiguous"] for r in remote] == [r["speedup_vs_contiguous"] for r in local]
