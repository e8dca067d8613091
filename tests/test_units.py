import os

import pytest

from ringsim.units import (InputError, parse_bandwidth, parse_bytes, parse_flops, parse_seq_len, parse_time,
                           write_atomic)


def test_seq_len():
    assert parse_seq_len("128K") == 131072
    assert parse_seq_len("1M") == 1 << 20
    assert parse_seq_len("128000") == 128000
    for bad in ("1.5M", "abc", "-4", "0"):
        with pytest.raises(InputError):
            parse_seq_len(bad)


def test_bandwidth_and_time():
    assert parse_bandwidth("450 GB/s") == 450e9
    assert parse_bandwidth("400 Gb/s") == 50e9
    assert parse_bandwidth("31GB/s") == 31e9
    assert parse_time("3 us") == pytest.approx(3e-6)
    assert parse_time("0.6us") == pytest.approx(0.6e-6)
    assert parse_bytes("80 GB") == 80e9
    assert parse_bytes("1 GiB") == 2**30
    assert parse_flops("989 TFLOP/s") == 989e12
    with pytest.raises(InputError, match="positive"):
        parse_bandwidth("0 GB/s")
    with pytest.raises(InputError, match="negative"):
        parse_time(-1.0)
    with pytest.raises(InputError, match="not a bandwidth"):
        parse_bandwidth("fast")


def test_write_atomic(tmp_path):
    p = tmp_path / "x.txt"
    write_atomic(p, "hello")
    assert p.read_text() == "hello"
    write_atomic(p, b"bytes")
    assert p.read_bytes() == b"bytes"
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []
    with pytest.raises(InputError, match="does not exist"):
        write_atomic(tmp_path / "nope" / "x.txt", "a")
    with pytest.raises(InputError, match="too long"):
        write_atomic(tmp_path / ("n" * 300), "a")
    with pytest.raises(InputError, match="empty file name"):
        write_atomic("", "a")


_BIG_WRITE = ("import signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_{action}); "
              "from ringsim.units import write_atomic; write_atomic(sys.argv[1], 'new ' * 1_000_000)")


def _file_size_limit(n_bytes):
    def limit():  # in the child: the kernel refuses (or kills for) any file past n_bytes
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))
    return limit


def test_write_atomic_error_mid_write_keeps_the_old_file_and_no_temporary(tmp_path):
    """The kernel stops the write part way (file size limit, as a full disk would): the old file
    is intact, no temporary remains, and the CLI says so in one line (exit 2)."""
    import subprocess
    import sys

    p = tmp_path / "out.txt"
    p.write_text("old contents")
    proc = subprocess.run([sys.executable, "-c", _BIG_WRITE.format(action="IGN"), str(p)],
                          preexec_fn=_file_size_limit(65536), capture_output=True, text=True)
    assert proc.returncode == 1 and "InputError: cannot write" in proc.stderr and "file too large" in proc.stderr
    assert p.read_text() == "old contents"
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]
    # through the CLI: one line, exit 2
    proc = subprocess.run([sys.executable, "-m", "ringsim.cli", "memory", "--seq-len", ",".join(["8K"] * 50),
                           "-o", str(p)], preexec_fn=_file_size_limit(200), capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "cannot write" in proc.stderr and "Traceback" not in proc.stderr
    assert p.read_text() == "old contents" and sorted(os.listdir(tmp_path)) == ["out.txt"]


def test_write_atomic_killed_mid_write_keeps_the_old_file(tmp_path):
    """A writer killed in the middle of writing (SIGXFSZ at the size limit) leaves the old file
    whole; its temporary (its PID now dead) is removed by the next write into the directory."""
    import signal
    import subprocess
    import sys

    p = tmp_path / "out.txt"
    p.write_text("old contents")
    proc = subprocess.run([sys.executable, "-c", _BIG_WRITE.format(action="DFL"), str(p)],
                          preexec_fn=_file_size_limit(65536), capture_output=True, text=True)
    assert proc.returncode == -signal.SIGXFSZ, (proc.returncode, proc.stderr)
    assert p.read_text() == "old contents"
    left = [n for n in os.listdir(tmp_path) if n != "out.txt"]
    assert all(n.startswith(".ringsim-") and n.endswith(".tmp") for n in left)
    proc = subprocess.run([sys.executable, "-c", "import sys; from ringsim.units import write_atomic; "
                           "write_atomic(sys.argv[1], 'next')", str(tmp_path / "other.txt")], capture_output=True)
    assert proc.returncode == 0
    assert sorted(os.listdir(tmp_path)) == ["other.txt", "out.txt"] and p.read_text() == "old contents"


def test_non_finite_and_out_of_range_figures_are_refused():
    for bad in (float("inf"), float("nan"), "1e999 GB/s", 10**400, "inf"):
        with pytest.raises(InputError):
            parse_bandwidth(bad)
    for bad in (float("nan"), float("inf"), 1e999, "1e999 s", 7200.0):
        with pytest.raises(InputError):
            parse_time(bad)
    with pytest.raises(InputError, match=r"finite number in \[1, 1e\+24\] FLOP/s"):
        parse_flops("1e999")
    with pytest.raises(InputError, match="too large"):
        parse_seq_len("1180591620717411303424")
    with pytest.raises(InputError, match="too large"):
        parse_seq_len("9" * 5000)  # past int()'s 4,300-digit guard too
    assert parse_seq_len("2G") == 1 << 31  # the largest length ringsim counts exactly
    with pytest.raises(InputError, match="too large"):
        parse_seq_len(str((1 << 31) + 1))
