"""Units, human strings and the one error type that means "bad input".

Internally ringsim works in seconds, bytes and FLOP/s (DESIGN.md §3.3). Human strings such as
``"450 GB/s"``, ``"400 Gb/s"``, ``"3 us"`` or ``"128K"`` are parsed only at the edges (topology
files and the CLI), by the functions here.

Conventions:
- Sequence lengths: ``K``/``M`` suffixes are *binary* (128K = 131072 tokens, as model cards use);
  plain integers are exact.
- Bandwidth, memory sizes and FLOP/s: SI prefixes are decimal (1 GB = 1e9 B); ``GiB``/``MiB`` are
  binary. A lower-case ``b`` means bits (``400 Gb/s`` = 50e9 bytes/s).
"""
from __future__ import annotations

import os
import re
import tempfile

__all__ = [
    "InputError",
    "parse_seq_len",
    "parse_bandwidth",
    "parse_time",
    "parse_bytes",
    "parse_flops",
    "parse_int_list",
    "format_bytes",
    "format_seconds",
    "write_atomic",
    "os_error_message",
    "read_json",
    "jsonable",
]


class InputError(ValueError):
    """Bad input from a user: the message is one line saying what is wrong and how to fix it.

    The CLI turns it into that line on stderr and exit code 2.
    """


_SEQ_RE = re.compile(r"^\s*(\d+)\s*([kKmMgG]?)\s*$")
_SEQ_MULT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


MAX_COUNT = 1 << 31  # tokens (T² pairs must fit in int64) and any other count given as text


def parse_seq_len(text: str | int, what: str = "sequence length", high: int = MAX_COUNT, why: str = "") -> int:
    """``"128K"`` → 131072, ``"1M"`` → 1048576, ``"128000"`` → 128000 (binary suffixes).

    At most ``high`` (2^31 = 2G tokens by default: ringsim counts T² pairs exactly in int64);
    ``why`` explains another bound in the message."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _SEQ_RE.match(str(text))
        if not m:
            raise InputError(
                f"{what} {text!r} is not a token count; use an integer or a binary K/M suffix, e.g. 131072 or 128K"
            )
        digits = m.group(1).lstrip("0") or "0"
        # past 30 digits it is far out of range (and int() refuses 4,300 digits)
        value = int(digits) * _SEQ_MULT[m.group(2).lower()] if len(digits) <= 30 else high + 1
    if value <= 0:
        raise InputError(f"{what} must be positive, got {text!r}")
    if value > high:
        shown = str(text) if len(str(text)) <= 40 else str(text)[:20] + "…"
        if not why:
            why = " tokens (2G), the longest sequence ringsim counts exactly" if high == MAX_COUNT else ""
        raise InputError(f"{what} {shown} is too large: at most {high:,}{why}; give a smaller value")
    return value


def parse_int_list(text: str, what: str, high: int = MAX_COUNT, why: str = "") -> list[int]:
    """Comma-separated sequence lengths or counts, each with optional K/M suffix, each at most ``high``."""
    parts = [p for p in str(text).split(",") if p.strip()]
    if not parts:
        raise InputError(f"{what} is empty; give one or more values separated by commas")
    return [parse_seq_len(p, what, high, why) for p in parts]


_NUM = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_SI = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_BIN = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}

_BW_RE = re.compile(r"^\s*" + _NUM + r"\s*([kKMGTP]i?)?\s*(B|b|bit|byte)s?\s*/\s*s\s*$")
_BYTES_RE = re.compile(r"^\s*" + _NUM + r"\s*([kKMGTP]i?)?\s*(B|byte|bytes)?\s*$")
_TIME_RE = re.compile(r"^\s*" + _NUM + r"\s*(ns|us|µs|ms|s)?\s*$")
_FLOPS_RE = re.compile(r"^\s*" + _NUM + r"\s*([kKMGTP])?\s*(FLOP/s|FLOPS|flop/s|flops)?\s*$")


def _prefix(p: str | None) -> float:
    if not p:
        return 1.0
    if p in _BIN:
        return _BIN[p]
    return _SI[p]


def _number(text) -> float:
    """A YAML/JSON/flag number as float; ints past float's range become inf (refused later)."""
    try:
        return float(text)
    except OverflowError:
        return float("inf") if text > 0 else float("-inf")


def _checked(value: float, text, what: str, kind: str, example: str, zero_ok: bool = False) -> float:
    """Finite, positive (or >= 0 with ``zero_ok``) and inside :data:`ringsim.limits.RANGES` [kind]."""
    import math

    from .limits import check_float

    if not math.isfinite(value):
        check_float(value, what, kind, example)  # raises, naming the range
    if zero_ok and value < 0:
        raise InputError(f"{what} must not be negative, got {text!r}")
    if not zero_ok and not value > 0:
        raise InputError(f"{what} must be positive, got {text!r}; {example}")
    return check_float(value, what, kind, example)


def parse_bandwidth(text: str | float | int, what: str = "bandwidth") -> float:
    """``"450 GB/s"`` → 450e9 bytes/s; ``"400 Gb/s"`` → 50e9 bytes/s; a bare number is bytes/s.

    Finite and within 1 B/s … 1e18 B/s."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = _number(text)
    else:
        m = _BW_RE.match(str(text))
        if not m:
            raise InputError(
                f"{what} {text!r} is not a bandwidth; write e.g. '450 GB/s' (bytes) or '400 Gb/s' (bits)"
            )
        value = float(m.group(1)) * _prefix(m.group(2))
        if m.group(3) in ("b", "bit"):
            value /= 8.0
    return _checked(value, text, what, "bandwidth", "give e.g. '450 GB/s'")


def parse_time(text: str | float | int, what: str = "latency", kind: str = "latency") -> float:
    """``"3 us"`` → 3e-6 s; a bare number is seconds. Negative and non-finite times are rejected;
    ``kind`` names the range (:data:`ringsim.limits.RANGES`: latency up to an hour)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = _number(text)
    else:
        m = _TIME_RE.match(str(text))
        if not m:
            raise InputError(f"{what} {text!r} is not a time; write e.g. '3 us', '0.6us' or '2 ms'")
        unit = m.group(2) or "s"
        value = float(m.group(1)) * {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}[unit]
    return _checked(value, text, what, kind, "give e.g. '3 us'", zero_ok=True)


def parse_bytes(text: str | float | int, what: str = "size") -> float:
    """``"80 GB"`` → 80e9; ``"80GiB"`` → 80·2^30; a bare number is bytes. Finite, up to 1e18."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = _number(text)
    else:
        m = _BYTES_RE.match(str(text))
        if not m:
            raise InputError(f"{what} {text!r} is not a size; write e.g. '80 GB' or '141GB'")
        value = float(m.group(1)) * _prefix(m.group(2))
    return _checked(value, text, what, "memory", "give e.g. '80 GB'")


def parse_flops(text: str | float | int, what: str = "peak_flops") -> float:
    """``"989 TFLOP/s"`` → 989e12 FLOP/s; a bare number is FLOP/s. Finite, 1 … 1e24 FLOP/s."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = _number(text)
    else:
        m = _FLOPS_RE.match(str(text))
        if not m:
            raise InputError(f"{what} {text!r} is not a compute rate; write e.g. '989 TFLOP/s'")
        value = float(m.group(1)) * _prefix(m.group(2))
    return _checked(value, text, what, "peak_flops", "give e.g. '989 TFLOP/s'")


def format_bytes(n: float) -> str:
    """Decimal units, 3 significant figures: 41943040000 → '41.9 GB'."""
    for unit, f in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= f:
            return f"{n / f:.4g} {unit}"
    return f"{n:.0f} B"


def format_seconds(t: float) -> str:
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if abs(t) >= f:
            return f"{t / f:.4g} {unit}"
    return f"{t / 1e-9:.4g} ns"


def os_error_message(e: OSError, path: str, what: str = "") -> str:
    """One line for a file-system error on ``path``: what went wrong and how to fix it."""
    import errno

    label = f"{what} {path}" if what else str(path)
    n = e.errno
    if n == errno.ENAMETOOLONG:
        name = os.path.basename(os.fspath(path))
        return (f"cannot write {label}: the file name is too long ({len(name.encode())} bytes) for the file "
                f"system; choose a shorter name")
    if n in (errno.EACCES, errno.EPERM):
        return f"cannot write {label}: permission denied; choose a directory you can write to"
    if n == errno.EROFS:
        return f"cannot write {label}: the file system is read-only; write somewhere else"
    if n == errno.ENOENT:
        d = os.path.dirname(os.path.abspath(os.fspath(path)))
        if os.path.isdir(d):  # e.g. /proc: a directory that takes no new files
            return f"cannot write {label}: {d} does not take new files; write somewhere else"
        return f"cannot write {label}: directory {d} does not exist; create it first"
    if n == errno.ENOTDIR:
        return f"cannot write {label}: a part of the path is not a directory; check the path"
    if n == errno.EISDIR:
        return f"cannot write {label}: it is a directory; give a file name"
    if n in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"cannot write {label}: {e.strerror.lower()}; free space or write somewhere else"
    return f"cannot write {label}: {e.strerror or e}; choose another location"


_TMP_PREFIX = ".ringsim-"
_swept_dirs: set[str] = set()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def remove_stale_temporaries(directory: str) -> list[str]:
    """Remove ``.ringsim-PID-*.tmp`` files in ``directory`` whose writer (PID) is dead: what a
    write killed mid-way (SIGKILL, power loss) left. Live writers' files are kept."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(_TMP_PREFIX) and name.endswith(".tmp")):
            continue
        pid = name[len(_TMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write a file so that readers see either the old file or the whole new one, never half.

    The data goes to a temporary file ``.ringsim-PID-*.tmp`` in the same directory, then
    ``os.replace`` moves it in. An error while writing (disk full, a signal turned into an
    exception) removes the temporary and leaves the old file as it was; a writer killed outright
    leaves its temporary, which the next write into that directory removes (its PID is dead).
    File-system errors are :class:`InputError` lines naming the file and the fix.
    """
    path = os.fspath(path)
    if path == "":
        raise InputError("cannot write to an empty file name; give a file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InputError(f"cannot write {path}: directory {directory} does not exist; create it first")
    if directory not in _swept_dirs:
        _swept_dirs.add(directory)
        remove_stale_temporaries(directory)
    mode = "wb" if isinstance(data, bytes) else "w"
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", suffix=".tmp", dir=directory)
        with os.fdopen(fd, mode) as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(e, OSError):
            raise InputError(os_error_message(e, path)) from None
        raise


def read_json(path: str | os.PathLike, what: str, hint: str):
    """Load a JSON file given by a user; a missing or unreadable file is an InputError naming it.

    ``what`` names the kind of file ("calibration", "trace file"), ``hint`` says how to get a good one.
    """
    import json

    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"{what} {path} does not exist; {hint}")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not JSON ({type(e).__name__}), so not a readable {what}; {hint}") from None


def jsonable(obj):
    """A copy of ``obj`` that strict JSON can hold: numpy scalars and arrays become Python values,
    keys become strings, NaN becomes null and ±inf the strings "inf"/"-inf" (JSON has no such
    numbers, and Perfetto and most parsers reject them)."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return obj
