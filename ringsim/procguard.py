"""Hard stops: child processes die with the command that started them, and its temporaries go too.

``ringsim run`` starts rank processes (through a multiprocessing forkserver) and ``ringsim sweep``
starts worker processes. Whatever ends the command — Ctrl-C, ``SIGTERM``, ``SIGHUP`` or a
``SIGKILL`` no handler can see — nothing of it may keep running or stay on disk. Three mechanisms,
each covering what the one before cannot:

1. **Signals become exceptions** (:func:`signals_as_exceptions`). ``SIGTERM`` and ``SIGHUP`` in
   the launcher raise :class:`Terminated` (a ``KeyboardInterrupt``), so the same ``finally``
   blocks that handle Ctrl-C stop the children and remove the temporary folders.
2. **Children watch their parent** (:func:`die_with_parent`). Every rank and sweep worker asks
   the Linux kernel for ``SIGKILL`` when its parent dies (``prctl(PR_SET_PDEATHSIG)``), so a
   ``SIGKILL``\\ed launcher cannot leave them computing. A rank's parent is the forkserver, which
   multiprocessing ends when every copy of its keep-alive pipe is closed; a rank closes the copy
   it inherits (:func:`release_forkserver`), so the launcher's death ends the forkserver, and the
   forkserver's the ranks, within milliseconds. A child that finds its launcher already gone
   exits at once (the race between the fork and the ``prctl``). Where ``prctl`` does not exist,
   a thread polls the parent's pid instead.
3. **A reaper outlives the launcher** (:class:`Reaper`). A small separate process (``python -m
   ringsim.procguard``, in its own session, deaf to ``SIGINT``/``SIGTERM``/``SIGHUP``) reads a
   pipe from the launcher, on which the launcher registers the pids it starts and the temporary
   folders it makes. When that pipe closes — the launcher exited, however — the reaper kills
   what is still alive of the registered pids (checking each pid's start time, so a recycled pid
   is never hit) and removes the folders, then exits. Like a cleaner who comes in when the
   tenant's lease ends, whether the tenant moved out in order or vanished.

Why these and not one process group for all: a rank killed by a signal to its group would also
take the forkserver and the resource tracker mid-cleanup, and a group kill needs someone alive to
send it — after a ``SIGKILL`` of the launcher nobody is. Parent-death signals need nobody; the
reaper covers what no child can do for itself (remove the launcher's folders).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

__all__ = ["Terminated", "signals_as_exceptions", "die_with_parent", "release_forkserver", "set_process_name",
           "process_start_time",
           "pid_alive", "Reaper", "reaper", "descendants"]

_LINUX = sys.platform.startswith("linux")
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


class Terminated(KeyboardInterrupt):
    """The command was asked to stop by a signal (``SIGTERM``, ``SIGHUP``); ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class signals_as_exceptions:
    """``with signals_as_exceptions():`` — inside, ``SIGTERM``/``SIGHUP`` raise :class:`Terminated`
    in the main thread (elsewhere, and outside the block, nothing changes)."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __enter__(self):
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        # later signals of the same kind must not interrupt the clean-up this one starts
        for s in signals_as_exceptions.SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Terminated(signum)

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


# ---- children ------------------------------------------------------------------------------------

def _prctl(option: int, arg) -> bool:
    if not _LINUX:
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, arg, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def set_process_name(name: str) -> None:
    """The name ``ps``/``top`` show (Linux; at most 15 bytes), e.g. ``ringsim-rank0``."""
    if _LINUX:
        import ctypes

        _prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]))


def pid_alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if _LINUX:  # a zombie is dead for our purposes
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
        except (OSError, IndexError):
            return False
    return True


def die_with_parent(launcher_pid: int | None = None) -> None:
    """Call first thing in a child: it is ``SIGKILL``\\ed when its parent dies. ``launcher_pid``
    (the process that started the whole tree) is checked after arming, for the race where it
    died before this child got here."""
    parent = os.getppid()
    armed = _prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent or (launcher_pid is not None and not pid_alive(launcher_pid)):
        os._exit(1)
    if not armed:
        def watch():
            while True:
                time.sleep(0.25)
                if os.getppid() != parent or (launcher_pid is not None and not pid_alive(launcher_pid)):
                    os._exit(1)

        threading.Thread(target=watch, name="ringsim-parent-watch", daemon=True).start()


def release_forkserver() -> None:
    """In a child of multiprocessing's forkserver: close the child's copy of the forkserver's
    keep-alive pipe. Every forkserver child inherits that pipe's write end, which keeps the
    forkserver running while any child lives; closed here, the forkserver ends when the launcher
    ends, and this child (parent-death signal) with it."""
    try:
        from multiprocessing import forkserver

        fs = forkserver._forkserver
        if fs._forkserver_alive_fd is not None:
            os.close(fs._forkserver_alive_fd)
            fs._forkserver_alive_fd = None
    except (AttributeError, OSError, ImportError):
        pass


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot; Linux), to tell a pid from a
    recycled one; None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc scan), children before grandchildren."""
    parents: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for e in entries:
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(e))
    out, todo = [], [pid]
    while todo:
        for c in parents.get(todo.pop(0), []):
            out.append(c)
            todo.append(c)
    return out


# ---- the reaper ----------------------------------------------------------------------------------

class Reaper:
    """The launcher's side of the reaper: register pids and folders; they are cleaned up when the
    launcher's process ends, however it ends. One reaper per launcher process (see :func:`reaper`)."""

    def __init__(self):
        self._proc = subprocess.Popen([sys.executable, "-m", "ringsim.procguard", str(os.getpid())],
                                      stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True, close_fds=True)
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _send(self, *msg) -> None:
        with self._lock:
            try:
                self._proc.stdin.write((json.dumps(msg) + "\n").encode())
                self._proc.stdin.flush()
            except (OSError, ValueError):
                pass  # the reaper is gone: the children's own parent-death signals still hold

    def add_pid(self, pid: int | None) -> None:
        if pid:
            self._send("pid", pid, process_start_time(pid))

    def add_dir(self, path: str | None) -> None:
        if path:
            self._send("dir", os.path.abspath(path))

    def forget_pid(self, pid: int | None) -> None:
        if pid:
            self._send("forget-pid", pid)

    def forget_dir(self, path: str | None) -> None:
        if path:
            self._send("forget-dir", os.path.abspath(path))


_REAPER: Reaper | None = None
_REAPER_PID: int | None = None


def reaper() -> Reaper:
    """This process's reaper, started on first use (a fork gets its own)."""
    global _REAPER, _REAPER_PID
    if _REAPER is None or _REAPER_PID != os.getpid():
        _REAPER, _REAPER_PID = Reaper(), os.getpid()
    return _REAPER


def _reap_main(launcher: int) -> None:
    set_process_name("ringsim-reaper")
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(s, signal.SIG_IGN)
    pids: dict[int, int | None] = {}
    dirs: list[str] = []
    for line in sys.stdin.buffer:  # ends when every copy of the launcher's end of the pipe is closed
        try:
            kind, *args = json.loads(line)
        except ValueError:
            continue
        if kind == "pid":
            pids[int(args[0])] = args[1]
        elif kind == "dir" and args[0] not in dirs:
            dirs.append(args[0])
        elif kind == "forget-pid":
            pids.pop(int(args[0]), None)
        elif kind == "forget-dir" and args[0] in dirs:
            dirs.remove(args[0])
    mine = {p for p, t in pids.items() if pid_alive(p) and (t is None or process_start_time(p) == t)}
    for p in mine:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 3.0
    while any(pid_alive(p) for p in mine) and time.monotonic() < deadline:
        time.sleep(0.02)
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    _reap_main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
