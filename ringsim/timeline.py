"""The Timeline: one schema for simulated and measured runs (DESIGN.md §3.4).

A timeline is a table of intervals, one row per thing a rank did: ``rank, step, phase, kind,
start_s, end_s, peer, bytes, pairs, flops``, plus run metadata (``source`` simulated/measured,
schedule, workload, topology, cost model, versions, host). Think of it as a flight recorder: the
simulator and the torch runtime write the same recorder format, so a prediction and a measurement
can be laid side by side step by step.

On disk it is Chrome Trace Event JSON (``ph: "X"``, ``ts``/``dur`` in µs, ``pid`` = rank,
``tid`` = stream, metadata in ``otherData``) which Perfetto and chrome://tracing open as they are.
Each event's ``args`` also carry the exact ``start_s``/``end_s`` so the reader round-trips exactly.
"""
from __future__ import annotations

import json
import os
from typing import Iterable

import numpy as np
import pandas as pd

from .units import InputError, jsonable, write_atomic

__all__ = ["COLUMNS", "Timeline", "read_timeline", "STREAMS"]

COLUMNS = ["rank", "step", "phase", "kind", "start_s", "end_s", "peer", "bytes", "pairs", "flops"]
_INT_COLS = ("rank", "step", "peer")
_NUM_COLS = ("bytes", "pairs", "flops")
# Chrome-trace thread (tid) per kind of interval: one lane each for compute, send, recv, wait.
STREAMS = {"compute": 0, "merge": 0, "send": 1, "recv": 2, "wait": 3}
_STREAM_NAMES = {0: "compute", 1: "send", 2: "recv", 3: "wait", 4: "other"}


class Timeline:
    """Intervals (a pandas DataFrame with :data:`COLUMNS`) plus a metadata dict."""

    def __init__(self, df: pd.DataFrame | None = None, meta: dict | None = None):
        if df is None:
            df = pd.DataFrame({c: [] for c in COLUMNS})
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise InputError(f"timeline lacks columns {missing}; expected {COLUMNS}")
        df = df[COLUMNS]
        cast = {}
        for c in _INT_COLS:
            if df[c].dtype != np.int64:
                cast[c] = np.int64
        for c in ("start_s", "end_s") + _NUM_COLS:
            if df[c].dtype != np.float64:
                cast[c] = np.float64
        for c in ("phase", "kind"):  # categorical: millions of rows, a handful of values
            if not isinstance(df[c].dtype, pd.CategoricalDtype):
                cast[c] = "category"
        if cast:
            df = df.astype(cast)
        self.df = df if isinstance(df.index, pd.RangeIndex) and df.index.start == 0 else df.reset_index(drop=True)
        self.meta = dict(meta or {})

    @classmethod
    def from_records(cls, records: Iterable, meta: dict | None = None) -> "Timeline":
        """Records are dicts with the COLUMNS keys or tuples in COLUMNS order."""
        records = list(records)
        if records and not isinstance(records[0], dict):
            df = pd.DataFrame.from_records(records, columns=COLUMNS)
        else:
            df = pd.DataFrame.from_records(records, columns=COLUMNS) if records else None
        return cls(df, meta)

    # ---- queries ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.df)

    @property
    def world_size(self) -> int:
        return int(self.df["rank"].max()) + 1 if len(self.df) else 0

    def of_kind(self, kind: str) -> pd.DataFrame:
        return self.df[self.df["kind"] == kind]

    def makespan_s(self) -> float:
        """When the last rank finished: the end of the last interval (compute, merge, transfer or
        wait), measured from the common origin."""
        return float(self.df["end_s"].max()) if len(self.df) else 0.0

    def per_rank_busy_s(self, kind: str = "compute") -> np.ndarray:
        d = self.of_kind(kind)
        out = np.zeros(self.world_size)
        if len(d):
            s = (d["end_s"] - d["start_s"]).groupby(d["rank"]).sum()
            out[s.index.to_numpy()] = s.to_numpy()
        return out

    # ---- Chrome trace -----------------------------------------------------------------------
    def to_chrome_trace(self) -> dict:
        events = []
        ranks = sorted(self.df["rank"].unique().tolist()) if len(self.df) else []
        for r in ranks:
            events.append({"name": "process_name", "ph": "M", "pid": int(r), "tid": 0,
                           "args": {"name": f"rank {r}"}})
            events.append({"name": "process_sort_index", "ph": "M", "pid": int(r), "tid": 0,
                           "args": {"sort_index": int(r)}})
            for tid, name in _STREAM_NAMES.items():
                events.append({"name": "thread_name", "ph": "M", "pid": int(r), "tid": tid,
                               "args": {"name": name}})
        cols = {c: self.df[c].to_numpy() for c in COLUMNS}
        for i in range(len(self.df)):
            kind = str(cols["kind"][i])
            start, end = float(cols["start_s"][i]), float(cols["end_s"][i])
            step = int(cols["step"][i])
            events.append({
                "name": f"{kind} s{step}" if step >= 0 else kind,
                "cat": str(cols["phase"][i]),
                "ph": "X",
                "ts": start * 1e6,
                "dur": max(end - start, 0.0) * 1e6,
                "pid": int(cols["rank"][i]),
                "tid": STREAMS.get(kind, 4),
                "args": {"kind": kind, "step": step, "phase": str(cols["phase"][i]),
                         "peer": int(cols["peer"][i]), "bytes": float(cols["bytes"][i]),
                         "pairs": float(cols["pairs"][i]), "flops": float(cols["flops"][i]),
                         "start_s": start, "end_s": end},
            })
        return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": jsonable(self.meta)}

    def write(self, path: str | os.PathLike) -> None:
        """Write atomically; ``.csv`` → CSV (metadata as a ``# {json}`` first line), ``.parquet``
        → Parquet, anything else → Chrome-trace JSON."""
        path = os.fspath(path)
        if path.endswith(".csv"):
            body = "# " + json.dumps(jsonable(self.meta)) + "\n" + self.df.to_csv(index=False)
            write_atomic(path, body)
        elif path.endswith(".parquet"):
            pa, pq = _pyarrow()
            table = pa.Table.from_pandas(self.df, preserve_index=False)
            # the run metadata rides in the file's key-value metadata, as the CSV's first line does
            kv = dict(table.schema.metadata or {})
            kv[_PARQUET_META_KEY] = json.dumps(jsonable(self.meta)).encode()
            buf = pa.BufferOutputStream()
            pq.write_table(table.replace_schema_metadata(kv), buf)
            write_atomic(path, buf.getvalue().to_pybytes())
        else:
            write_atomic(path, json.dumps(self.to_chrome_trace(), separators=(",", ":")))

    @classmethod
    def from_chrome_trace(cls, data: dict | list, origin: str = "trace") -> "Timeline":
        events = data.get("traceEvents", []) if isinstance(data, dict) else data
        meta = data.get("otherData", {}) if isinstance(data, dict) else {}
        rows = []
        for ev in events:
            if ev.get("ph") != "X":
                continue
            a = ev.get("args", {}) or {}
            if "step" not in a:
                continue  # not a ringsim interval
            start = a.get("start_s", ev["ts"] * 1e-6)
            end = a.get("end_s", (ev["ts"] + ev.get("dur", 0)) * 1e-6)
            rows.append((int(ev["pid"]), int(a["step"]), str(a.get("phase", ev.get("cat", "fwd"))),
                         str(a.get("kind", ev.get("name", "compute"))), float(start), float(end),
                         int(a.get("peer", -1)), float(a.get("bytes", 0)), float(a.get("pairs", 0)),
                         float(a.get("flops", 0))))
        if not rows:
            raise InputError(f"{origin}: no ringsim intervals found (events with ph 'X' and args.step); "
                             "is it a ringsim trace? Kineto traces are imported with the profiler importer")
        return cls.from_records(rows, meta)


_PARQUET_META_KEY = b"ringsim.meta"


def _pyarrow():
    """``(pyarrow, pyarrow.parquet)``, or one line saying how to get them."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("Parquet timelines need pyarrow; pip install 'ringsim[parquet]', or write .json/.csv") from None
    return pa, pq


def read_timeline(path: str | os.PathLike) -> Timeline:
    """Load a timeline written by :meth:`Timeline.write` (Chrome JSON, CSV or Parquet)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"trace file {path} does not exist; check the path")
    try:
        if path.endswith(".csv"):
            with open(path) as f:
                first = f.readline()
                meta = json.loads(first[2:]) if first.startswith("# ") else {}
            df = pd.read_csv(path, comment=None, skiprows=1 if meta else 0)
            return Timeline(df, meta)
        if path.endswith(".parquet"):
            _, pq = _pyarrow()
            table = pq.read_table(path)
            raw = (table.schema.metadata or {}).get(_PARQUET_META_KEY)
            return Timeline(table.to_pandas(), json.loads(raw) if raw else {})
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, pd.errors.ParserError, OSError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{path} is not a readable trace ({type(e).__name__}: {str(e).splitlines()[0]}); "
                         "give a ringsim Chrome-trace JSON, CSV or Parquet file") from None
    return Timeline.from_chrome_trace(data, origin=path)
