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


def test_sweep_runs_unchanged_on_a_dask_cluster_by_address():
    """A real local Dask cluster (a scheduler and two worker processes, started here): `ringsim
    sweep --executor dask --scheduler ADDRESS` returns exactly the local rows, and the points ran
    as chunked tasks on the cluster's workers."""
    pytest.importorskip("dask.distributed")
    import json

    from dask.distributed import Client, LocalCluster

    args = ["sweep", "--topology", "dgx-h100-8", "--model", "llama3-8b", "--seq-len", "16K,32K,64K",
            "--schedules", "contiguous,striped,zigzag", "--format", "json"]
    code, out, err = run(*args, "--jobs", "1")
    assert code == 0, err
    local = json.loads(out)["results"]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        code, out, err = run(*args, "--executor", "dask", "--scheduler", cluster.scheduler_address)
        assert code == 0, err
        with Client(cluster.scheduler_address) as client:
            prefixes = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    remote = json.loads(out)["results"]
    assert len(remote) == 9 and remote == local
    assert "run_points" in prefixes


@pytest.mark.slow  # waits out the 10 s connection timeout
def test_unreachable_scheduler_is_one_line():
    pytest.importorskip("dask.distributed")
    code, out, err = run("sweep", "--seq-len", "16K", "--schedules", "zigzag", "--executor", "dask",
                         "--scheduler", "tcp://127.0.0.1:9")
    assert code == 2 and "cannot reach the Dask scheduler" in err and len(err.strip().splitlines()) == 1


def test_points_go_out_in_chunks_and_come_back_in_grid_order():
    from ringsim.sweep import chunk_size

    assert chunk_size(10_000, 2) == 64 and chunk_size(100, 2) == 6 and chunk_size(3, 16) == 1
    pts = Study(seq_lens=[16384, 32768, 65536], schedules=["contiguous", "zigzag"]).points()
    one = run_study(pts, jobs=1)
    two = run_study(pts, jobs=2)
    assert [(r["seq_len"], r["schedule"]) for r in two] == [(p["seq_len"], p["schedule"]) for p in pts]
    assert two == one
