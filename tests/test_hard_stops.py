"""Hard stops: real SIGTERM, SIGKILL and SIGINT to real `ringsim run` and `ringsim sweep` processes.

Each test starts the command with a workload long enough to still be running, waits until its
children (ranks, sweep workers) are at work, learns the whole process tree from /proc, sends the
signal to the command, and checks that 5 s later no process of that tree is alive and that the
temporary folder it was given (TMPDIR) is empty: no ``ringsim-run-*``, no ``pymp-*``. A test that
fails kills what is left, so a failure never leaves work behind for the next test.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


# ---- /proc, without psutil -------------------------------------------------------------------------

def _stat(pid: int):
    """(state, ppid, start time) of a live pid, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
        return rest[0].decode(), int(rest[1]), int(rest[19])
    except (OSError, IndexError, ValueError):
        return None


def _tree(root: int) -> dict[int, tuple[int, int]]:
    """Every descendant of ``root``: pid → (depth, start time)."""
    children: dict[int, list[int]] = {}
    starts = {}
    for e in os.listdir("/proc"):
        if e.isdigit() and (st := _stat(int(e))) is not None:
            children.setdefault(st[1], []).append(int(e))
            starts[int(e)] = st[2]
    out, todo = {}, [(root, 0)]
    while todo:
        pid, depth = todo.pop()
        for c in children.get(pid, []):
            out[c] = (depth + 1, starts[c])
            todo.append((c, depth + 1))
    return out


def _alive(pid: int, start: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z" and st[2] == start  # a zombie or a recycled pid is not ours


def _default_sigint():
    """In the child before exec: SIGINT back to its default. A shell starts background jobs with
    SIGINT ignored, and Python keeps an ignored SIGINT ignored — so without this the Ctrl-C these
    tests send would do nothing when the test run itself was started in the background."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class _Command:
    """A `ringsim` command in its own session (so a group signal reaches it and its children only)."""

    def __init__(self, args, tmp_path):
        self.tmp = tmp_path / "tmp"
        self.cwd = tmp_path / "work"
        self.tmp.mkdir(parents=True)
        self.cwd.mkdir(parents=True)
        env = dict(os.environ, TMPDIR=str(self.tmp), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "ringsim.cli", *args], cwd=self.cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True, preexec_fn=_default_sigint)
        self.err: list[str] = []
        self.out: list[str] = []
        threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True).start()
        threading.Thread(target=lambda: self.out.extend(self.proc.stdout), daemon=True).start()
        self.seen: dict[int, int] = {}

    def wait_for(self, ready, timeout=90.0):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            tree = _tree(self.proc.pid)
            self.seen.update({p: s for p, (_, s) in tree.items()})
            if ready(tree, "".join(self.err)):
                return tree
            if self.proc.poll() is not None:
                pytest.fail(f"the command ended early ({self.proc.returncode}): {''.join(self.err)[-800:]}")
            time.sleep(0.05)
        pytest.fail(f"not ready after {timeout} s; tree {tree}; stderr {''.join(self.err)[-800:]}")

    def stop(self, sig, group=False):
        """Send ``sig``; return (exit code, seconds until nothing of the tree is alive, survivors)."""
        self.seen.update({p: s for p, (_, s) in _tree(self.proc.pid).items()})
        (os.killpg if group else os.kill)(self.proc.pid, sig)
        t0 = time.monotonic()
        code = self.proc.wait(timeout=60)
        while time.monotonic() - t0 < 5.0 and any(_alive(p, s) for p, s in self.seen.items()):
            time.sleep(0.05)
        left = [p for p, s in self.seen.items() if _alive(p, s)]
        return code, time.monotonic() - t0, left

    def cleanup(self):
        for p, s in self.seen.items():
            if _alive(p, s):
                os.kill(p, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def leftovers(self, settle=1.0):
        time.sleep(settle)  # the reaper removes folders right after the launcher's pipe closes
        return sorted(os.listdir(self.tmp))


@pytest.fixture
def command(tmp_path):
    cmds = []

    def start(*args):
        c = _Command(args, tmp_path / f"c{len(cmds)}")
        cmds.append(c)
        return c

    yield start
    for c in cmds:
        c.cleanup()


# ---- ringsim run -------------------------------------------------------------------------------------

RUN = ["run", "--world-size", "2", "--schedule", "zigzag", "--seq-len", "4096", "--heads", "2", "--head-dim", "32",
       "--repeat", "100000", "--warmup", "0", "--threads-per-rank", "1", "--timeout-s", "600"]


def _ranks_running(tree, err):
    # the ranks are the forkserver's children: grandchildren of the launcher
    return sum(1 for depth, _ in tree.values() if depth == 2) >= 2 and "local rank(s)" in err


@pytest.mark.distributed
@pytest.mark.parametrize("sig,codes", [(signal.SIGTERM, (143,)), (signal.SIGKILL, (-9,)), (signal.SIGINT, (130,))],
                         ids=["SIGTERM", "SIGKILL", "SIGINT"])
def test_run_stopped_by_a_signal_leaves_no_process_and_no_temporaries(command, tmp_path, sig, codes):
    c = command(*RUN)
    tree = c.wait_for(_ranks_running)
    time.sleep(1.0)  # well inside the ring's iterations
    assert sum(1 for d, _ in _tree(c.proc.pid).values() if d == 2) >= 2
    assert any(n.startswith("ringsim-run-") for n in os.listdir(c.tmp))  # there is something to clean up
    code, took, left = c.stop(sig)
    assert code in codes, (code, "".join(c.err)[-600:])
    assert left == [], f"alive 5 s after {sig.name}: {left} of {tree}"
    assert c.leftovers() == []
    assert "Traceback" not in "".join(c.err)


# ---- ringsim sweep -----------------------------------------------------------------------------------

# three quick points on one 8-GPU node, then three that take many seconds each (1024 ranks, DES)
SWEEP = ["sweep", "-j", "2", "--topology", "dgx-h100-8,dgx-h100-128n", "--seq-len", "16K", "--engine", "des",
         "--schedules", "contiguous,striped,zigzag", "-o", "out.csv"]


def _workers_and_points(n_points):
    def ready(tree, err):
        return sum(1 for d, _ in tree.values() if d == 1) >= 2 and err.count(" points ") >= n_points
    return ready


@pytest.mark.parametrize("sig,group,code", [(signal.SIGINT, False, 130), (signal.SIGINT, True, 130),
                                            (signal.SIGTERM, False, 143)],
                         ids=["SIGINT", "SIGINT-to-group", "SIGTERM"])
def test_sweep_interrupted_keeps_finished_points_and_stops_its_workers(command, tmp_path, sig, group, code):
    """Ctrl-C (to the process or, as a terminal sends it, to the whole group) and SIGTERM: the
    finished points are kept, the workers stop at once, exit 128 + the signal."""
    c = command(*SWEEP)
    c.wait_for(_workers_and_points(1))
    got, took, left = c.stop(sig, group=group)
    err = "".join(c.err)
    assert got == code, err[-800:]
    assert left == [] and took < 5.0
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("ringsim sweep: ") and "finished points" in last and " of 6 " in last
    kept = int(last.split("kept ")[1].split()[0])
    assert 1 <= kept < 6
    rows = (c.cwd / "out.csv").read_text().strip().splitlines()
    assert rows[0].startswith("topology,model,world_size") and len(rows) == 1 + kept
    assert c.leftovers(0) == []


def test_sweep_killed_leaves_no_workers(command, tmp_path):
    c = command(*SWEEP)
    tree = c.wait_for(_workers_and_points(1))
    code, took, left = c.stop(signal.SIGKILL)
    assert code == -9
    assert left == [], f"alive 5 s after SIGKILL: {left} of {tree}"
    assert c.leftovers(0) == []


def test_sweep_interrupted_before_the_first_point_writes_nothing(command, tmp_path):
    args = list(SWEEP)
    args[args.index("--topology") + 1] = "dgx-h100-128n"  # every point slow
    c = command(*args)
    c.wait_for(_workers_and_points(0))
    code, took, left = c.stop(signal.SIGINT)
    err = "".join(c.err)
    assert code == 130 and left == []
    assert "before any point finished; nothing written" in err and "Traceback" not in err
    assert not (c.cwd / "out.csv").exists()


# ---- each mechanism on its own -----------------------------------------------------------------------

_PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
print(child.pid, flush=True)
{register}
time.sleep(120)
"""
_CHILD_DIES_WITH_PARENT = ("from ringsim.procguard import die_with_parent; die_with_parent(); "
                           "import time; time.sleep(120)")
_CHILD_PLAIN = "import time; time.sleep(120)"


def _parent_and_child(child_code, register=""):
    p = subprocess.Popen([sys.executable, "-c", _PARENT.format(register=register), child_code],
                         stdout=subprocess.PIPE, text=True, start_new_session=True)
    child = int(p.stdout.readline())
    t0 = time.monotonic()
    while (_stat(child) is None or time.monotonic() - t0 < 1.0) and time.monotonic() - t0 < 30:
        time.sleep(0.05)  # the child is up and has armed itself
    return p, child, _stat(child)[2]


def _gone_within(pid, start, seconds):
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds and _alive(pid, start):
        time.sleep(0.05)
    return not _alive(pid, start)


def test_a_child_that_watches_its_parent_dies_with_it():
    for code, dies in ((_CHILD_DIES_WITH_PARENT, True), (_CHILD_PLAIN, False)):  # and the control
        p, child, start = _parent_and_child(code)
        try:
            p.kill()
            p.wait()
            assert _gone_within(child, start, 3.0) == dies
        finally:
            if _alive(child, start):
                os.kill(child, signal.SIGKILL)


def test_the_reaper_cleans_up_after_a_killed_launcher(tmp_path):
    folder = tmp_path / "ringsim-run-test"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "f").write_text("x")
    register = ("from ringsim.procguard import reaper; r = reaper(); r.add_pid(child.pid); "
                f"r.add_dir({str(folder)!r}); print(r.pid, flush=True)")
    p, child, start = _parent_and_child(_CHILD_PLAIN, register)
    reaper_pid = int(p.stdout.readline())
    reaper_start = _stat(reaper_pid)[2]
    try:
        time.sleep(0.3)
        assert folder.exists() and _alive(child, start)
        p.kill()  # the launcher only: its child (which does not watch it) is the reaper's to kill
        p.wait()
        assert _gone_within(child, start, 5.0)
        assert _gone_within(reaper_pid, reaper_start, 5.0)
        assert not folder.exists()
    finally:
        for pid, st in ((child, start), (reaper_pid, reaper_start)):
            if _alive(pid, st):
                os.kill(pid, signal.SIGKILL)


def test_stale_run_folders_of_dead_launchers_are_removed(tmp_path):
    import json

    from ringsim.runtime.launch import remove_stale_run_dirs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name, owner in (("ringsim-run-dead", {"pid": dead.pid, "start": None}),
                        ("ringsim-run-live", {"pid": os.getppid(), "start": _stat(os.getppid())[2]}),
                        ("ringsim-run-unknown", None)):
        (tmp_path / name).mkdir()
        if owner is not None:
            (tmp_path / name / "owner.json").write_text(json.dumps(owner))
    removed = remove_stale_run_dirs(str(tmp_path))
    assert [os.path.basename(r) for r in removed] == ["ringsim-run-dead"]
    assert sorted(os.listdir(tmp_path)) == ["ringsim-run-live", "ringsim-run-unknown"]


def test_dask_sweep_killed_leaves_no_workers_and_no_scratch_space(command):
    from optional import require

    require("dask.distributed")
    c = command("sweep", "--executor", "dask", "-j", "2", "--engine", "des", "--topology", "dgx-h100-128n",
                "--seq-len", "1M,2M", "-o", "out.csv")
    tree = c.wait_for(lambda tree, err: sum(1 for d, _ in tree.values() if d == 1) >= 3)
    time.sleep(3.0)  # the local cluster's workers are up and computing
    tree = c.wait_for(lambda tree, err: True)
    code, took, left = c.stop(signal.SIGKILL)
    assert code == -9
    assert left == [], f"alive 5 s after SIGKILL: {left} of {tree}"
    assert c.leftovers() == []  # the workers' scratch space was the sweep's own, and is gone
