"""Launching ranks: N local processes with a watchdog, or one rank under an external ``torchrun``.

Local launch (:func:`launch_local`): the parent starts N processes from a ``forkserver`` whose
preload imports torch once (so N ranks do not each pay the import), gives them a free TCP port on
127.0.0.1 for a gloo process group, and watches them. It is the one place that decides a run has
failed:

- a rank that **exits** with a non-zero code fails the run at once (the earliest to fail is
  named: ranks that died without reporting — killed, ``os._exit`` — before ranks whose
  communication failed because a peer vanished);
- a rank that makes **no progress** (no ring-step heartbeat) for ``timeout_s`` fails the run; the
  rank named is one not blocked on a transfer (the others wait on it), else the one whose last
  heartbeat is oldest.

On failure the parent terminates the other ranks and raises :class:`RankFailure` with one line
that names the rank, its last known iteration, phase and step. The gloo group's own timeout is
``2·timeout_s + 10`` s — longer than the watchdog's, so the parent names the rank that stopped
first, while no rank can block forever even without the parent.

External launch (:func:`run_under_torchrun`): with ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the
environment, the process is one rank; it uses NCCL when CUDA is available (device
``cuda:LOCAL_RANK``), gloo otherwise, and gathers every rank's result on rank 0.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import socket
import tempfile
import time
import traceback
from datetime import timedelta

__all__ = ["RankFailure", "launch_local", "run_world", "under_torchrun", "run_under_torchrun", "free_port"]

_OWNER = "owner.json"  # {pid, start} of the launcher that made a ringsim-run-* folder
_PHASES = {0: "start", 1: "fwd", 2: "bwd", 3: "done"}
_PHASE_CODE = {v: k for k, v in _PHASES.items()}


class RankFailure(RuntimeError):
    """A rank died or hung; the message is one line naming it."""

    def __init__(self, message: str, rank: int):
        super().__init__(message)
        self.rank = rank


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_CTX = None


def _context():
    global _CTX
    if _CTX is None:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "torch.distributed", "ringsim.runtime.runner",
                                    "ringsim.runtime.executor"])
        _CTX = ctx
    return _CTX


def _child(fn, args, rank, world_size, port, timeout_s, threads, result_dir, hb_time, hb_state, hb_wait,
           launcher_pid=None):
    """Entry point of a local rank: set threads, join the gloo group, run ``fn``, save its result."""
    from ringsim import procguard

    procguard.release_forkserver()  # so the forkserver ends with the launcher ...
    procguard.die_with_parent(launcher_pid)  # ... and this rank with the forkserver
    procguard.set_process_name(f"ringsim-rank{rank}")
    err_path = os.path.join(result_dir, f"rank{rank}.err")
    try:
        import torch
        import torch.distributed as dist

        torch.set_num_threads(threads)

        def heartbeat(iteration, phase, step):
            hb_state[3 * rank] = iteration
            hb_state[3 * rank + 1] = _PHASE_CODE.get(phase, 0)
            hb_state[3 * rank + 2] = step
            hb_time[rank] = time.time()

        def waiting(flag: bool):
            hb_wait[rank] = int(flag)

        heartbeat.waiting = waiting
        hb_time[rank] = time.time()
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world_size,
                                # longer than the watchdog's bound, so the parent names the culprit first
                                timeout=timedelta(seconds=2 * timeout_s + 10))
        try:
            result = fn(*args, rank=rank, heartbeat=heartbeat)
            torch.save(result, os.path.join(result_dir, f"rank{rank}.pt.tmp"))
            os.replace(os.path.join(result_dir, f"rank{rank}.pt.tmp"), os.path.join(result_dir, f"rank{rank}.pt"))
            dist.barrier()  # nobody tears the group down while a peer still needs it
        finally:
            dist.destroy_process_group()
    except BaseException as e:  # noqa: BLE001 - report anything, then exit non-zero
        with open(err_path, "w") as f:
            json.dump({"time": time.time(), "error": f"{type(e).__name__}: {e}".splitlines()[0][:300],
                       "traceback": traceback.format_exc()}, f)
        os._exit(1)


def _write_owner(result_dir: str) -> None:
    from ringsim.procguard import process_start_time

    with open(os.path.join(result_dir, _OWNER), "w") as f:
        json.dump({"pid": os.getpid(), "start": process_start_time(os.getpid())}, f)


def remove_stale_run_dirs(tmp: str | None = None) -> list[str]:
    """Remove ``ringsim-run-*`` folders whose launcher is dead (its pid gone or recycled): what a
    launcher killed together with its reaper left. Folders without an owner record are kept."""
    from ringsim.procguard import pid_alive, process_start_time

    tmp = tmp or tempfile.gettempdir()
    removed = []
    try:
        names = [n for n in os.listdir(tmp) if n.startswith("ringsim-run-")]
    except OSError:
        return removed
    for n in names:
        path = os.path.join(tmp, n)
        try:
            with open(os.path.join(path, _OWNER)) as f:
                owner = json.load(f)
            pid, start = int(owner["pid"]), owner.get("start")
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if pid == os.getpid():
            continue
        if not pid_alive(pid) or (start is not None and process_start_time(pid) not in (None, start)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _register_multiprocessing_helpers(guard) -> None:
    """The forkserver and multiprocessing's temporary folder (``pymp-*``, the forkserver's socket)
    outlive the ranks; the reaper removes them if this process cannot (SIGKILL)."""
    from multiprocessing import forkserver, process

    guard.add_pid(getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None))
    guard.add_dir(process.current_process()._config.get("tempdir"))


def _where(hb_state, rank) -> str:
    it, ph, st = hb_state[3 * rank], hb_state[3 * rank + 1], hb_state[3 * rank + 2]
    if it < 0:
        return "before the first iteration"
    return f"iteration {it}, {_PHASES.get(ph, '?')} step {st}"


def _read_err(result_dir, rank):
    try:
        with open(os.path.join(result_dir, f"rank{rank}.err")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_world(fn, args: tuple, world_size: int, timeout_s: float = 120.0, threads: int = 1,
              poll_s: float = 0.05) -> list:
    """Run ``fn(*args, rank=r, heartbeat=cb)`` on ``world_size`` local gloo ranks; return the
    ranks' return values in rank order. ``fn`` must be importable (pickled by reference).
    Raises :class:`RankFailure` when a rank dies or makes no progress for ``timeout_s``."""
    from ringsim import procguard

    ctx = _context()
    remove_stale_run_dirs()
    result_dir = tempfile.mkdtemp(prefix="ringsim-run-")
    _write_owner(result_dir)
    guard = procguard.reaper()  # removes result_dir and kills the ranks if this process dies first
    guard.add_dir(result_dir)
    hb_time = ctx.Array("d", world_size, lock=False)
    hb_state = ctx.Array("i", [-1, 0, 0] * world_size, lock=False)
    hb_wait = ctx.Array("i", world_size, lock=False)  # 1 while a rank blocks on a transfer
    port = free_port()
    procs = []
    try:
        for r in range(world_size):
            p = ctx.Process(target=_child, args=(fn, args, r, world_size, port, timeout_s, threads, result_dir,
                                                 hb_time, hb_state, hb_wait, os.getpid()),
                            daemon=True, name=f"ringsim-rank{r}")
            p.start()
            procs.append(p)
            guard.add_pid(p.pid)
        _register_multiprocessing_helpers(guard)
        started = time.time()  # forkserver start() returns once the child is forked
        for r in range(world_size):
            hb_time[r] = max(hb_time[r], started)
        first_seen: dict[int, float] = {}
        while True:
            codes = [p.exitcode for p in procs]
            if all(c == 0 for c in codes):
                break
            now = time.time()
            for r, c in enumerate(codes):
                if c not in (None, 0) and r not in first_seen:
                    first_seen[r] = now
            if first_seen:
                def order(r):
                    err = _read_err(result_dir, r)
                    # died without a report (signal, os._exit) first, then by report time
                    return (first_seen[r], err is not None, err["time"] if err else 0.0, r)
                culprit = min(first_seen, key=order)
                err = _read_err(result_dir, culprit)
                code = codes[culprit]
                how = f"exited with code {code}" if code > 0 else f"was killed by signal {-code}"
                detail = f": {err['error']}" if err else ""
                raise RankFailure(f"rank {culprit} {how} at {_where(hb_state, culprit)}{detail}; "
                                  f"stopped the other ranks", culprit)
            stale = [r for r in range(world_size) if codes[r] is None and now - hb_time[r] > timeout_s]
            if stale:
                # a rank stuck in its own work, not one blocked on a transfer to or from it,
                # is the culprit; among equals, the one whose last heartbeat is oldest
                culprit = min(stale, key=lambda r: (hb_wait[r], hb_time[r], r))
                raise RankFailure(f"rank {culprit} made no progress for {now - hb_time[culprit]:.1f} s "
                                  f"(timeout {timeout_s:g} s) at {_where(hb_state, culprit)}; stopped all ranks",
                                  culprit)
            time.sleep(poll_s)
        import torch

        return [torch.load(os.path.join(result_dir, f"rank{r}.pt"), weights_only=False) for r in range(world_size)]
    finally:
        for p in procs:
            if p.exitcode is None:
                p.terminate()
        for p in procs:
            p.join(timeout=2.0)
            if p.exitcode is None:
                p.kill()
                p.join(timeout=2.0)
        shutil.rmtree(result_dir, ignore_errors=True)
        for p in procs:
            guard.forget_pid(p.pid)
        guard.forget_dir(result_dir)


def _run_rank_entry(cfg, rank, heartbeat):
    from .runner import run_rank

    return run_rank(cfg, rank, heartbeat=heartbeat)


def launch_local(cfg) -> list[dict]:
    """Run a :class:`~ringsim.runtime.runner.RunConfig` on local gloo ranks; returns their results."""
    return run_world(_run_rank_entry, (cfg,), cfg.world_size, cfg.timeout_s, cfg.threads_per_rank)


def under_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def run_under_torchrun(cfg):
    """Run as one rank of an external launch. Returns ``(results or None, backend, device_type)``:
    rank 0 gets every rank's result, the others ``None``."""
    import torch
    import torch.distributed as dist

    from ringsim.units import InputError

    from .runner import run_rank

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world != cfg.world_size:
        raise InputError(f"--world-size {cfg.world_size} does not match torchrun's WORLD_SIZE={world}; "
                         "give the same number")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
        torch.set_num_threads(cfg.threads_per_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=cfg.timeout_s))
    try:
        res = run_rank(cfg, rank, device=device)
        gathered = [None] * world if rank == 0 else None
        dist.gather_object(res, gathered, dst=0)
    finally:
        dist.destroy_process_group()
    return gathered, backend, device.type
