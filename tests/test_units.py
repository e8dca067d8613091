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
