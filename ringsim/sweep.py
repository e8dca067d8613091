"""What-if studies: a grid of simulation points, run in parallel, kept when interrupted.

A **study** is the cartesian product of option lists — sequence length, world size, topology,
link-bandwidth scale, schedule, mask, model and phase. Each **point** is one
:func:`ringsim.simulate.simulate_point` call (the fast path where it is exact, the DES otherwise)
and becomes one flat result row. Points that cannot run (a length that does not divide over the
ranks, a world size larger than the topology) become rows with an ``error`` and no metrics, so a
grid never dies half way for one bad corner.
"""
from __future__ import annotations

import itertools
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field

from .units import InputError

__all__ = ["Interrupted", "Study", "load_study", "run_point", "run_points", "run_study", "chunk_size", "add_speedups",
           "ROW_COLUMNS"]

ROW_COLUMNS = ["topology", "model", "world_size", "seq_len", "schedule", "mask", "phase", "bw_scale", "engine",
               "makespan_s", "layer_makespan_s", "ideal_bound_s", "efficiency", "imbalance", "overlap",
               "hide_block_tokens", "transfers_hidden", "peak_memory_bytes", "critical_path",
               "speedup_vs_contiguous", "error"]

_STUDY_KEYS = {"seq_len", "world_size", "topology", "bw_scale", "bw_class", "schedules", "mask", "model", "phase",
               "batch", "dtype", "engine", "calibration"}


@dataclass
class Study:
    seq_lens: list[int]
    world_sizes: list[int | None] = field(default_factory=lambda: [None])
    topologies: list[str] = field(default_factory=lambda: ["dgx-h100-8"])
    bw_scales: list[float] = field(default_factory=lambda: [1.0])
    bw_class: str | None = None  # None: scale every link class
    schedules: list[str] = field(default_factory=lambda: ["contiguous", "striped", "zigzag"])
    masks: list = field(default_factory=lambda: [None])  # None: each model's own mask
    models: list[str] = field(default_factory=lambda: ["llama3-8b"])
    phases: list[str] = field(default_factory=lambda: ["fwd"])
    batch: int = 1
    dtype: str = "bf16"
    engine: str = "auto"
    calibration: str | None = None  # calib.json replacing the roofline cost model

    def points(self) -> list[dict]:
        grid = itertools.product(self.topologies, self.models, self.world_sizes, self.seq_lens, self.masks,
                                 self.phases, self.bw_scales, self.schedules)
        return [dict(topology=t, model=m, world_size=g, seq_len=T, mask=k, phase=p, bw_scale=b, schedule=s,
                     bw_class=self.bw_class, batch=self.batch, dtype=self.dtype, engine=self.engine,
                     calibration=self.calibration)
                for t, m, g, T, k, p, b, s in grid]


def load_study(path: str) -> dict:
    """A YAML study file: the same keys as the sweep options (lists or comma strings)."""
    import yaml

    if not os.path.exists(path):
        raise InputError(f"study file {path} does not exist; check the path")
    try:
        with open(path) as f:
            doc = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({str(e).splitlines()[0]}); fix the syntax") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: a study file is a mapping of option: values; got {type(doc).__name__}")
    unknown = sorted(set(doc) - _STUDY_KEYS)
    if unknown:
        raise InputError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_STUDY_KEYS))}")
    return {k: (",".join(str(x) for x in v) if isinstance(v, list) else str(v)) for k, v in doc.items()}


def run_points(points: list[dict]) -> list[dict]:
    """Simulate a chunk of points in one task (what a worker process or a Dask worker runs)."""
    return [run_point(p) for p in points]


def _topology(name: str):
    """The topology a point names, loaded once per worker process (a 1,024-GPU preset takes tens of
    milliseconds to parse; what-ifs return new objects, so the cached one is never changed)."""
    from .topoload import load_topology

    topo = _TOPOLOGIES.get(name)
    if topo is None:
        if len(_TOPOLOGIES) >= 64:
            _TOPOLOGIES.clear()
        topo = _TOPOLOGIES[name] = load_topology(name)
    return topo


_TOPOLOGIES: dict = {}


def run_point(point: dict) -> dict:
    """Simulate one point; never raises for bad input (the row carries the error instead)."""
    from .simulate import SimSpec, simulate_point
    from .workload import Workload, build_model

    row = {k: point.get(k) for k in ("topology", "model", "world_size", "seq_len", "schedule", "mask", "phase",
                                     "bw_scale")}
    try:
        topo = _topology(point["topology"])
        if point["bw_scale"] != 1.0:
            classes = [point["bw_class"]] if point.get("bw_class") else sorted({l.link_class for l in topo.links})
            for c in classes:
                topo = topo.scale_link_class(c, point["bw_scale"])
        wl = Workload(build_model(point["model"]), point["seq_len"], point.get("batch", 1), point.get("dtype", "bf16"))
        spec = SimSpec(workload=wl, topology=topo, schedule=point["schedule"], world_size=point["world_size"],
                       mask=point["mask"], phase=point["phase"], engine=point.get("engine", "auto"),
                       cost_model=_cost_model(point.get("calibration")))
        res = simulate_point(spec)
        row["mask"] = res["mask"]
        row.update({k: res[k] for k in ("world_size", "engine", "makespan_s", "layer_makespan_s", "ideal_bound_s",
                                        "efficiency", "imbalance", "overlap", "hide_block_tokens",
                                        "transfers_hidden", "peak_memory_bytes")})
        row["critical_path"] = res["critical_path"]["holder"]
        row["error"] = None
    except InputError as e:
        row["error"] = str(e)
    return row


def _cost_model(calibration: str | None):
    """Roofline, or the calibrated model (loaded once per worker process)."""
    from .costs import RooflineCost

    if not calibration:
        return RooflineCost()
    if calibration not in _CALIBRATIONS:
        from .calibration import load_calibration

        _CALIBRATIONS[calibration] = load_calibration(calibration)
    return _CALIBRATIONS[calibration]


_CALIBRATIONS: dict = {}


def add_speedups(rows: list[dict]) -> list[dict]:
    """speedup_vs_contiguous for each row whose group (all options but the schedule) has contiguous."""
    key = lambda r: tuple(r.get(k) for k in ("topology", "model", "world_size", "seq_len", "mask", "phase",
                                             "bw_scale"))
    base = {key(r): r["makespan_s"] for r in rows if r["schedule"] == "contiguous" and r.get("makespan_s")}
    for r in rows:
        b = base.get(key(r))
        r["speedup_vs_contiguous"] = b / r["makespan_s"] if b and r.get("makespan_s") else None
    return rows


def chunk_size(n_points: int, workers: int) -> int:
    """Points per task: about eight tasks per worker (so a slow chunk does not leave the others
    idle at the end), at most 64 points (progress stays live), at least one."""
    return max(1, min(64, n_points // max(8 * workers, 1)))


def run_study(points: list[dict], jobs: int = 1, on_done=None, executor: str = "local",
              scheduler: str | None = None) -> list[dict]:
    """Run every point; ``on_done(row, n_done)`` is called as each finishes (progress, partial output).

    ``executor``: ``local`` runs ``jobs`` worker processes (every core by default, from the CLI);
    ``dask`` sends the same tasks to a dask.distributed cluster — the one at ``scheduler``
    (``tcp://host:8786``; its workers need ringsim installed) or, without an address, a local one of
    ``jobs`` single-threaded worker processes. Either way points go out in chunks
    (:func:`chunk_size`) of :func:`run_points`, so 10,000 points are a few hundred tasks, not 10,000.

    On KeyboardInterrupt it raises :class:`Interrupted` carrying the finished rows, so the caller
    keeps them. Rows come back in grid order.
    """
    results: dict[int, dict] = {}

    def finished(start: int, rows: list[dict]) -> None:
        for k, row in enumerate(rows):
            results[start + k] = row
            if on_done:
                on_done(row, len(results))

    if executor == "dask":
        try:
            from dask.distributed import Client, as_completed
        except ImportError:
            raise InputError("--executor dask needs dask.distributed; pip install 'ringsim[dask]'") from None
        # a scheduler address: that cluster; none: a local one, one single-threaded worker process
        # per job (the simulator is pure Python: threads would share one interpreter lock)
        try:
            client = (Client(scheduler, timeout="10s") if scheduler
                      else Client(processes=True, n_workers=max(jobs, 1), threads_per_worker=1,
                                  dashboard_address=None))
        except (OSError, TimeoutError) as e:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler} ({e}); check the address "
                             "(tcp://host:8786) and that the scheduler is running") from None
        try:
            workers = max(len(client.scheduler_info().get("workers", {})), 1)
            size = chunk_size(len(points), workers)
            futs = {client.submit(run_points, points[i:i + size], pure=False): i
                    for i in range(0, len(points), size)}
            for fut in as_completed(futs):
                finished(futs[fut], fut.result())
        except KeyboardInterrupt:
            raise Interrupted([results[i] for i in sorted(results)]) from None
        finally:
            client.close()
    elif executor != "local":
        raise InputError(f"unknown executor {executor!r}; use local or dask")
    elif jobs <= 1 or len(points) <= 1:
        try:
            for i, p in enumerate(points):
                finished(i, [run_point(p)])
        except KeyboardInterrupt:
            raise Interrupted([results[i] for i in sorted(results)]) from None
    else:
        pool = ProcessPoolExecutor(max_workers=jobs)
        size = chunk_size(len(points), jobs)
        try:
            pending = {pool.submit(run_points, points[i:i + size]): i for i in range(0, len(points), size)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    finished(pending.pop(fut), fut.result())
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise Interrupted([results[i] for i in sorted(results)]) from None
        pool.shutdown()
    return add_speedups([results[i] for i in sorted(results)])


class Interrupted(KeyboardInterrupt):
    """Carries the rows finished before an interrupt."""

    def __init__(self, rows):
        super().__init__("interrupted")
        self.rows = add_speedups(rows)
