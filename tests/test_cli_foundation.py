"""`ringsim memory` and `ringsim plan` end to end, including every error path's exit code."""
import json
import subprocess
import sys

import pytest

from ringsim.cli import main


def run(*args):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    return _run(list(args))


def _run(argv, capsys=None):
    import io
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def test_memory_json_key():
    code, out, err = run("memory", "--model", "llama3-70b", "--seq-len", "128000", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["kv_cache_bytes"] == 41_943_040_000


def test_memory_table_rows():
    code, out, _ = run("memory", "--model", "llama3-70b", "--seq-len", "8000,32000,128000,1000000",
                       "--world-size", "4", "--device-memory", "80GB", "--format", "json")
    rows = json.loads(out)["rows"]
    assert [r["kv_cache_bytes"] for r in rows] == [2_621_440_000, 10_485_760_000, 41_943_040_000, 327_680_000_000]
    assert [r["fits"] for r in rows] == [True, True, True, False]


def test_memory_compares_architectures():
    code, out, _ = run("memory", "--model", "llama3-70b,deepseek-v3,mistral-7b,jamba-v0.1", "--seq-len", "128K",
                       "--format", "csv")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("model,attention,")
    assert [l.split(",")[1] for l in lines[1:]] == ["standard", "mla", "sliding", "hybrid"]


@pytest.mark.parametrize("sched,limit", [("zigzag", 1.001), ("striped", 1.001)])
def test_plan_balanced(sched, limit):
    code, out, err = run("plan", "--schedule", sched, "--world-size", "8", "--seq-len", "1M", "--mask", "causal",
                         "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["imbalance"] <= limit
    assert doc["total_pairs"] == (1 << 20) * ((1 << 20) + 1) // 2
    assert len(doc["steps"]) == 64 and len(doc["per_rank"]) == 8


def test_plan_contiguous_imbalance():
    code, out, _ = run("plan", "--schedule", "contiguous", "--world-size", "8", "--seq-len", "1M", "--format", "json")
    assert round(json.loads(out)["imbalance"], 3) == 1.875


def test_plan_table_and_csv():
    code, out, _ = run("plan", "--schedule", "zigzag", "--world-size", "4", "--seq-len", "4K")
    assert code == 0 and "imbalance" in out and "per-rank totals" in out
    code, out, _ = run("plan", "--world-size", "4", "--seq-len", "4K", "--format", "csv")
    assert out.splitlines()[0] == "rank,step,owner,pairs,flops,kv_bytes_received,tiles"
    assert len(out.strip().splitlines()) == 17


def test_plan_writes_output_atomically(tmp_path):
    p = tmp_path / "plan.json"
    code, out, _ = run("plan", "--world-size", "2", "--seq-len", "64", "--format", "json", "--output", str(p))
    assert code == 0 and out == ""
    assert json.loads(p.read_text())["world_size"] == 2


ERRORS = [
    (["plan", "--schedule", "zigzag", "--world-size", "8", "--seq-len", "1001"], "nearest valid lengths: 992 or 1008"),
    (["plan", "--seq-len", "12X"], "binary K/M suffix"),
    (["plan", "--mask", "diag"], "unknown mask"),
    (["plan", "--tile", "axb"], "QxK"),
    (["plan", "--schedule", "spiral"], "Invalid value"),
    (["memory", "--model", "gpt5"], "known presets: llama2-7b"),
    (["memory", "--dtype", "int4"], "unknown dtype"),
    (["memory", "--device-memory", "lots"], "neither a size"),
    (["memory", "--model", "", "--heads", "4"], "missing --layers"),
    (["memory", "--world-size", "0"], "world size must be positive"),
    (["memory", "--nope"], "No such option"),
    (["plan", "--output", "/nonexistent/dir/x.json"], "does not exist"),
]


@pytest.mark.parametrize("argv,msg", ERRORS)
def test_error_paths(argv, msg):
    code, out, err = run(*argv)
    assert code == 2
    assert msg in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_entry_point_subprocess():
    """The installed console script maps bad input to exit 2 too (no traceback)."""
    p = subprocess.run([sys.executable, "-c", "from ringsim.cli import main; main()", "plan", "--seq-len", "7"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "nearest valid" in p.stderr
