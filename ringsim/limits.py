"""Limits before work, and the ranges the model makes sense for.

Think of a lift's load plate: it says how much the lift carries before anyone steps in, instead
of the lift finding out half way up. ringsim refuses, with one line naming the limit and how to
raise it, the inputs that would exhaust memory or time (a 4,096-GPU fully-connected topology, a
YAML file nested 10,000 levels deep, a 16-million-row table) before it starts on them.

Two kinds of bound live here:

- **Work limits** (:class:`Limit`): sizes past which a run would take minutes or gigabytes. Each
  has a default and an environment variable that raises it for one command
  (``RINGSIM_MAX_RANKS=8192 ringsim plan …``) or a whole session.
- **Model ranges** (:data:`RANGES`, :func:`check_int`, :func:`check_float`): where a number means
  something to the model and stays exact in the engines' numpy arrays: a sequence length of at
  most 2^31 tokens (so T² pairs fit in int64), a bandwidth scale factor between 1e-6 and 1e6, a
  finite FLOP/s. These are fixed; a value outside is refused with its range.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .units import InputError

__all__ = ["Limit", "GPUS", "LINKS", "RANKS", "TABLE_ROWS", "YAML_BYTES", "YAML_DEPTH", "YAML_NODES",
           "MAX_SEQ_LEN", "MAX_KV_BYTES", "MAX_TILE", "RANGES", "check_int", "check_float", "limits_table"]


@dataclass(frozen=True)
class Limit:
    """A work limit: ``default``, raised by the environment variable ``env``."""

    env: str
    default: int
    unit: str  # what is counted, plural: "GPUs", "rows"
    why: str  # what past the limit would cost

    @property
    def value(self) -> int:
        text = os.environ.get(self.env)
        if text is None or text.strip() == "":
            return self.default
        try:
            v = int(text.strip().replace("_", ""))
        except ValueError:
            v = 0
        if v < 1:
            raise InputError(f"environment variable {self.env}={text!r} is not a positive integer; "
                             f"set it to a count of {self.unit} (default {self.default:,}) or unset it")
        return v

    def check(self, n: int, where: str, fix: str) -> None:
        """Refuse ``n`` past the limit: ``where: N unit is over the limit …; fix, or raise it``."""
        limit = self.value
        if n > limit:
            raise InputError(f"{where}: {n:,} {self.unit} is over the limit of {limit:,} ({self.why}); "
                             f"{fix}, or raise the limit with {self.env}=N")


GPUS = Limit("RINGSIM_MAX_GPUS", 16384, "GPUs", "GPUs a topology may declare")
LINKS = Limit("RINGSIM_MAX_LINKS", 131072, "links", "full-duplex links a topology may declare; "
              "a fully-connected dimension of n GPUs has n(n-1)/2")
RANKS = Limit("RINGSIM_MAX_RANKS", 4096, "ranks", "ranks in one ring; a ring's plan holds G² steps")
TABLE_ROWS = Limit("RINGSIM_MAX_TABLE_ROWS", 65536, "rows", "rows of a per-step table")
YAML_BYTES = Limit("RINGSIM_MAX_YAML_BYTES", 1 << 20, "bytes", "size of a YAML input file")
YAML_DEPTH = Limit("RINGSIM_MAX_YAML_DEPTH", 32, "levels", "nesting of a YAML input file")
YAML_NODES = Limit("RINGSIM_MAX_YAML_NODES", 1_000_000, "values", "values of a YAML file with its aliases "
                   "expanded")

ALL_LIMITS = (GPUS, LINKS, RANKS, TABLE_ROWS, YAML_BYTES, YAML_DEPTH, YAML_NODES)

# ---- model ranges (fixed) ------------------------------------------------------------------------

MAX_SEQ_LEN = 1 << 31  # tokens: T² allowed pairs must fit in int64
MAX_TILE = 1 << 16  # tokens per side of a kernel tile
MAX_KV_BYTES = 1 << 53  # bytes of K/V of one sequence batch, all layers: exact in float64 and int64 sums

# name → (low, high, low is open, unit for messages)
RANGES = {
    "scale factor": (1e-6, 1e6, False, ""),
    "speed factor": (1e-6, 1e6, False, ""),
    "bandwidth": (1.0, 1e18, False, " bytes/s"),
    "latency": (0.0, 3600.0, False, " s"),
    "kernel_overhead": (0.0, 60.0, False, " s"),
    "peak_flops": (1.0, 1e24, False, " FLOP/s"),
    "memory": (1.0, 1e18, False, " bytes"),
    "timeout": (0.0, 7 * 24 * 3600.0, True, " s"),
}


def _fmt(x: float) -> str:
    return f"{x:g}"


def check_float(value, what: str, kind: str, example: str = "") -> float:
    """``value`` as a finite float inside ``RANGES[kind]``, or an InputError naming ``what`` and the range."""
    lo, hi, lo_open, unit = RANGES[kind]
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{what} {value!r} is not a number{'; ' + example if example else ''}") from None
    low_ok = v > lo if lo_open else v >= lo
    if not (math.isfinite(v) and low_ok and v <= hi):
        rng = f"{'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}]{unit}"
        raise InputError(f"{what} must be a finite number in {rng}, got {value!r}"
                         + (f"; {example}" if example else ""))
    return v


def check_int(value, what: str, lo: int, hi: int, fix: str = "") -> int:
    """``value`` as an int in ``[lo, hi]`` (bools refused), or an InputError naming ``what`` and the range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{what} must be an integer in [{lo:,}, {hi:,}], got {value!r}"
                         + (f"; {fix}" if fix else ""))
    if not lo <= value <= hi:
        raise InputError(f"{what} must be in [{lo:,}, {hi:,}], got {value:,}" + (f"; {fix}" if fix else ""))
    return value


def limits_table() -> list[dict]:
    """The work limits in force (for documentation and `--help` texts)."""
    return [{"variable": l.env, "default": l.default, "value": l.value, "unit": l.unit, "what": l.why}
            for l in ALL_LIMITS]
