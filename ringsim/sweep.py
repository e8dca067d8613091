"""What-if studies: a grid of simulation points, run in parallel, kept when interrupted.

A **study** is the cartesian product of option lists — sequence length, world size, topology,
link-bandwidth scale, strategy (``schedules``: a spec, a bare layout name being the ring), mask,
model and phase. Each **point** is one
:func:`ringsim.simulate.simulate_point` call (the fast path where it is exact, the DES otherwise)
and becomes one flat result row. Points that cannot run (a length that does not divide over the
ranks, a world size larger than the topology, a strategy that is not applicable — heads a Ulysses
degree does not divide, memory above ``device_memory`` or the topology's device) become rows with
an ``error`` (the reason) and no metrics, so a grid never dies half way for one bad corner.
"""
from __future__ import annotations

import itertools
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field

from .units import InputError

__all__ = ["Interrupted", "Study", "load_study", "check_point", "run_point", "run_points", "run_study", "chunk_size", "add_speedups",
           "ROW_COLUMNS"]

ROW_COLUMNS = ["topology", "model", "world_size", "seq_len", "schedule", "mask", "phase", "bw_scale", "engine", "kernels",
               "makespan_s", "layer_makespan_s", "ideal_bound_s", "efficiency", "imbalance", "overlap",
               "exposed_comm_s", "exposed_comm_mean_s", "hide_block_tokens", "transfers_hidden", "peak_memory_bytes",
               "critical_path", "speedup_vs_contiguous", "error"]

_STUDY_KEYS = {"seq_len", "world_size", "topology", "bw_scale", "bw_class", "schedules", "strategies", "mask", "model",
               "phase", "batch", "dtype", "engine", "calibration", "kernels", "implementation", "documents", "seed",
               "cached_tokens", "device_memory"}


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
    calibration: str | None = None  # calib.json replacing the device's cost model
    kernels: str | None = None  # --kernels (None: each device's default)
    implementation: str = "ringsim"
    documents: str | None = None  # --documents (one pack per point: drawn at its length, or the listed one)
    seed: int = 0
    cached_tokens: int | None = None  # pass-kv / pass-q prefill
    device_memory: str | None = None  # memory limit per GPU (None: the topology's device)

    def points(self) -> list[dict]:
        grid = itertools.product(self.topologies, self.models, self.world_sizes, self.seq_lens, self.masks,
                                 self.phases, self.bw_scales, self.schedules)
        return [dict(topology=t, model=m, world_size=g, seq_len=T, mask=k, phase=p, bw_scale=b, schedule=s,
                     bw_class=self.bw_class, batch=self.batch, dtype=self.dtype, engine=self.engine,
                     calibration=self.calibration, kernels=self.kernels, implementation=self.implementation,
                     documents=self.documents, seed=self.seed, cached_tokens=self.cached_tokens,
                     device_memory=self.device_memory)
                for t, m, g, T, k, p, b, s in grid]


_SINGLE_KEYS = {"bw_class", "batch", "dtype", "engine", "calibration", "kernels", "implementation", "seed",
                "cached_tokens", "device_memory"}
_STUDY_FIX = "a study file maps sweep options (seq_len, schedules, ...) to a value or a list of values"


def load_study(path: str) -> dict:
    """A YAML study file: the same keys as the sweep options (lists or comma strings).

    Returns each key's values as one comma string, as the option would take them. Every value
    must be a plain scalar (a number or a string), finite, and single where the option takes one
    (``batch``, ``dtype``, ``engine``, ``calibration``, ``bw_class``); anything else is one
    :class:`InputError` line naming the file and the key."""
    import math

    from .yamlio import read_yaml_file

    doc = read_yaml_file(path, path, "study file", _STUDY_FIX)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise InputError(f"{path}: a study file is a mapping of option: values; got {type(doc).__name__}")
    unknown = sorted(str(k) for k in doc if k not in _STUDY_KEYS)
    if unknown:
        raise InputError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_STUDY_KEYS))}")
    out = {}
    for k, v in doc.items():
        items = v if isinstance(v, list) else [v]
        if v is None or not items:
            raise InputError(f"{path}: {k}: empty; give a value or a list of values, or remove the key")
        if k in _SINGLE_KEYS and len(items) != 1:
            raise InputError(f"{path}: {k}: takes one value, got {len(items)}; keep one")
        for x in items:
            if x is None or isinstance(x, (dict, list, set, bytes)) or not isinstance(x, (str, int, float)):
                raise InputError(f"{path}: {k}: {str(x)[:60]!r} is not a plain value; give a number or a name, "
                                 "or a list of them")
            if isinstance(x, float) and not math.isfinite(x):
                raise InputError(f"{path}: {k}: {x} is not a finite number; give a finite value")
            if isinstance(x, bool):
                raise InputError(f"{path}: {k}: {x} is a yes/no value, not a {k.replace('_', ' ')}; give one")
        out[k] = ",".join(str(x) for x in items)
    return out


def check_point(point: dict, topologies: dict | None = None) -> str | None:
    """Why ``point`` cannot run, or None: the cheap checks of :func:`run_point` (topology, model,
    workload, world size, partition, link class) without simulating. ``topologies`` caches loads."""
    from .schedules import parse_mask
    from .topoload import load_topology
    from .workload import Workload, build_model

    cache = topologies if topologies is not None else {}
    try:
        name = point["topology"]
        if name not in cache:
            cache[name] = load_topology(name)
        topo = cache[name]
        cls = point.get("bw_class")
        if cls and point.get("bw_scale", 1.0) != 1.0 and cls not in {l.link_class for l in topo.links}:
            raise InputError(f"topology {topo.name} has no link class {cls!r} for --bw-class; it has "
                             f"{sorted({l.link_class for l in topo.links})}")
        wl = Workload(build_model(point["model"]), point["seq_len"], point.get("batch", 1), point.get("dtype", "bf16"))
        G = point["world_size"] or topo.num_gpus
        topo.check_world_size(G)
        from .strategies import parse_strategy

        # the strategy's own checks (name, partition, degrees); a packed point's pack is drawn when it runs
        strategy = parse_strategy(point["schedule"], point.get("implementation", "ringsim"),
                                  [wl.seq_len] if point.get("documents") else None,
                                  cached_tokens=point.get("cached_tokens"))
        mask = point["mask"] or wl.model.default_mask()
        if point.get("documents"):
            parse_mask(mask)
        else:
            strategy.plan(wl, G, mask)
        if point.get("engine", "auto") not in ("auto", "des", "fast"):
            raise InputError(f"unknown engine {point['engine']!r}; use auto, des or fast")
        if point["phase"] not in ("fwd", "fwd+bwd"):
            raise InputError(f"unknown phase {point['phase']!r}; use fwd or fwd+bwd")
    except InputError as e:
        return str(e)
    return None


def _error_row(point: dict, error: str) -> dict:
    row = {k: point.get(k) for k in ("topology", "model", "world_size", "seq_len", "schedule", "mask", "phase",
                                     "bw_scale")}
    row["error"] = error
    return row


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
        from .documents import pack_for

        wl = Workload(build_model(point["model"]), point["seq_len"], point.get("batch", 1), point.get("dtype", "bf16"))
        pack = pack_for(point.get("documents"), point["seq_len"], point.get("seed", 0))
        from .memory import parse_device_memory

        limit = parse_device_memory(point.get("device_memory")) or topo.device.memory_bytes or None
        spec = SimSpec(workload=wl, topology=topo, schedule=point["schedule"], world_size=point["world_size"],
                       mask=point["mask"], phase=point["phase"], engine=point.get("engine", "auto"),
                       cost_model=_cost_model(point.get("calibration"), point.get("kernels"), topo),
                       implementation=point.get("implementation", "ringsim"), documents=pack,
                       cached_tokens=point.get("cached_tokens"), memory_limit_bytes=limit)
        res = simulate_point(spec)
        row["mask"] = res["mask"]
        row["kernels"] = res["kernels"]
        row["schedule"] = res["schedule"]
        row.update({k: res[k] for k in ("world_size", "engine", "makespan_s", "layer_makespan_s", "ideal_bound_s",
                                        "efficiency", "imbalance", "overlap", "exposed_comm_s", "exposed_comm_mean_s",
                                        "hide_block_tokens", "transfers_hidden", "peak_memory_bytes")})
        row["critical_path"] = res["critical_path"]["holder"]
        row["error"] = None
    except InputError as e:
        row["error"] = str(e)
    return row


def _cost_model(calibration: str | None, kernels: str | None, topology):
    """The calibrated model (loaded once per worker process), else ``kernels`` for the topology."""
    from .costs import resolve_kernels

    if not calibration:
        return resolve_kernels(kernels, topology)
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


def _worker_init(launcher_pid: int) -> None:
    """A local worker: dies with the sweep (parent-death signal), leaves Ctrl-C to the sweep, and
    ends at once on SIGTERM (the sweep's handlers, inherited through fork, are undone)."""
    import signal

    from .procguard import die_with_parent, set_process_name

    die_with_parent(launcher_pid)
    set_process_name("ringsim-sweep")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _stop_pool(pool) -> None:
    """Cancel what has not started and end the workers now (a point can take minutes)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)  # shutdown() forgets it
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(2.0)
        if p.is_alive():
            p.kill()
            p.join(2.0)
    # let the pool's manager thread see its workers gone and close its wake-up pipe now: at
    # interpreter exit concurrent.futures wakes every manager thread, and one still closing its
    # pipe then makes that write fail (EBADF, printed as a traceback)
    if manager is not None:
        manager.join(2.0)


def chunk_size(n_points: int, workers: int) -> int:
    """Points per task: about eight tasks per worker (so a slow chunk does not leave the others
    idle at the end), at most 64 points (progress stays live), at least one."""
    return max(1, min(64, n_points // max(8 * workers, 1)))


def run_study(points: list[dict], jobs: int = 1, on_done=None, executor: str = "local",
              scheduler: str | None = None, errors: list[str | None] | None = None) -> list[dict]:
    """Run every point; ``on_done(row, n_done)`` is called as each finishes (progress, partial output).

    ``executor``: ``local`` runs ``jobs`` worker processes (every core by default, from the CLI);
    ``dask`` sends the same tasks to a dask.distributed cluster — the one at ``scheduler``
    (``tcp://host:8786``; its workers need ringsim installed) or, without an address, a local one of
    ``jobs`` single-threaded worker processes. Either way points go out in chunks
    (:func:`chunk_size`) of :func:`run_points`, so 10,000 points are a few hundred tasks, not 10,000.

    ``errors`` (from :func:`check_point`, one per point) marks points known not to run: they
    become error rows without being dispatched. On KeyboardInterrupt (Ctrl-C, or SIGTERM turned
    into :class:`ringsim.procguard.Terminated`) it stops the workers and raises
    :class:`Interrupted` carrying the finished rows, so the caller keeps them. Rows come back in
    grid order.
    """
    results: dict[int, dict] = {}
    skipped = {i: _error_row(p, e) for i, (p, e) in enumerate(zip(points, errors or [])) if e}
    if skipped:
        todo = [i for i in range(len(points)) if i not in skipped]
        done = run_study([points[i] for i in todo], jobs, on_done, executor, scheduler)
        rows = dict(skipped)
        rows.update(zip(todo, done))
        return add_speedups([rows[i] for i in sorted(rows)])

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
        scratch = None
        try:
            if scheduler:
                client = Client(scheduler, timeout="10s")
            else:  # the workers' scratch space is this sweep's own, removed however the sweep ends
                import tempfile

                import dask

                from .procguard import reaper

                scratch = tempfile.mkdtemp(prefix="ringsim-dask-")
                reaper().add_dir(scratch)
                with dask.config.set({"temporary-directory": scratch}):
                    client = Client(processes=True, n_workers=max(jobs, 1), threads_per_worker=1,
                                    local_directory=scratch, dashboard_address=None)
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
        except KeyboardInterrupt as e:
            raise Interrupted([results[i] for i in sorted(results)], getattr(e, "signum", None)) from None
        finally:
            client.close()
            if scratch:
                import shutil

                shutil.rmtree(scratch, ignore_errors=True)
    elif executor != "local":
        raise InputError(f"unknown executor {executor!r}; use local or dask")
    elif jobs <= 1 or len(points) <= 1:
        try:
            for i, p in enumerate(points):
                finished(i, [run_point(p)])
        except KeyboardInterrupt as e:
            raise Interrupted([results[i] for i in sorted(results)], getattr(e, "signum", None)) from None
    else:
        size = chunk_size(len(points), jobs)
        pool = ProcessPoolExecutor(max_workers=min(jobs, -(-len(points) // size)), initializer=_worker_init,
                                   initargs=(os.getpid(),))
        try:
            pending = {pool.submit(run_points, points[i:i + size]): i for i in range(0, len(points), size)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    finished(pending.pop(fut), fut.result())
        except KeyboardInterrupt as e:
            _stop_pool(pool)
            raise Interrupted([results[i] for i in sorted(results)], getattr(e, "signum", None)) from None
        except BaseException:
            _stop_pool(pool)
            raise
        pool.shutdown()
    return add_speedups([results[i] for i in sorted(results)])


class Interrupted(KeyboardInterrupt):
    """Carries the rows finished before an interrupt; ``signum`` is the signal that stopped the
    sweep when it was not Ctrl-C (SIGTERM, SIGHUP)."""

    def __init__(self, rows, signum: int | None = None):
        super().__init__("interrupted")
        self.rows = add_speedups(rows)
        self.signum = signum
