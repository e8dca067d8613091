"""The point-to-point communicator: one batched post of a step's messages, then one wait.

Usage per step (the program says the same on every rank, so the batched calls pair up)::

    comm.post([(peer, [tensors]), …], [(peer, [tensors]), …])   # queue this step's sends and receives
    comm.commit(step, phase)                                      # post them all in one batch_isend_irecv
    ... compute ...
    comm.post(…); comm.commit(step, phase)                        # messages posted at the compute's end
    comm.wait()                                                   # block until every batch is done

A step may commit more than one batch (a reduce-scatter posts its receive at the step's start and
its send after the reduction); :meth:`wait` completes all of them.

A *message* is everything sent to one peer (or received from one) in a step: its tensors are
separate point-to-point ops of the batch. The ops are posted in a fixed order (all sends, then
all receives, in the order queued), which is what lets gloo and NCCL match them without tags.
The communicator counts the bytes it sent and received and, with a recording
:class:`~ringsim.runtime.instrument.Recorder`, files per message a ``send`` row (post →
completion, the destination as peer) or a ``recv`` row (the source as peer), and per step a
``wait`` row (the time the rank was blocked in :meth:`wait`).

Completion times on CPU come from two waiter threads (one per direction) that block on the gloo
work objects, message by message, and stamp the moment each message's ops return — so a transfer that finished during compute is
not charged the compute time. On GPU the NCCL work runs on its own stream, which events on the
compute stream cannot see; there a transfer's completion is stamped after ``wait()`` (an upper
bound: the later of the transfer's end and the compute's end).
"""
from __future__ import annotations

import queue
import threading
import time

import torch
import torch.distributed as dist

from .instrument import NullRecorder, Recorder

__all__ = ["P2PComm"]


class _Waiter:
    """A daemon thread that waits on work objects and stamps their completion (CPU only)."""

    def __init__(self):
        self.q: queue.Queue = queue.Queue()
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        while True:
            item = self.q.get()
            if item is None:
                return
            groups, box, done = item
            try:
                for works in groups:  # one message after another: a stamp per message
                    for w in works:
                        w.wait()
                    box.append(time.perf_counter_ns())
            except BaseException as e:  # surfaced by the main thread's wait()
                box.append(e)
            done.set()

    def submit(self, groups):
        box, done = [], threading.Event()
        self.q.put((groups, box, done))
        return box, done

    def close(self):
        self.q.put(None)


class P2PComm:
    def __init__(self, rank: int, world_size: int, recorder: Recorder | None = None, group=None,
                 timed_completion: bool | None = None):
        self.rank, self.world_size, self.group = rank, world_size, group
        self.rec = recorder or NullRecorder(rank)
        self._sends: list = []
        self._recvs: list = []
        self._pending: list = []
        # called with True before blocking on a transfer and False after: lets a watchdog tell a
        # rank that waits on its peers from one stuck in its own work
        self.wait_hook = None
        self.bytes_sent = 0
        self.bytes_received = 0
        if timed_completion is None:
            timed_completion = self.rec.enabled and not self.rec.cuda
        self._waiters = (_Waiter(), _Waiter()) if timed_completion else None

    def post(self, sends, recvs) -> None:
        """Queue messages: ``sends`` and ``recvs`` are lists of ``(peer, [tensors])``."""
        self._sends += [(int(p), list(ts)) for p, ts in sends]
        self._recvs += [(int(p), list(ts)) for p, ts in recvs]

    def commit(self, step: int, phase: str) -> None:
        if self._pending and self._pending[0][:2] != (step, phase):
            raise RuntimeError("commit() before the previous step's wait()")
        if not self._sends and not self._recvs:
            return
        sends, recvs = self._sends, self._recvs
        self._sends, self._recvs = [], []
        ops, groups = [], []
        for fn, msgs in ((dist.isend, sends), (dist.irecv, recvs)):
            for peer, ts in msgs:
                groups.append(len(ts))
                ops += [dist.P2POp(fn, t, peer, self.group) for t in ts]
        nbytes = lambda ts: sum(t.numel() * t.element_size() for t in ts)
        msgs = [("send", p, nbytes(ts)) for p, ts in sends] + [("recv", p, nbytes(ts)) for p, ts in recvs]
        t_post = self.rec.mark()
        works = dist.batch_isend_irecv(ops)
        # the works of each message, in order
        per_msg, i = [], 0
        for n in groups:
            per_msg.append(works[i:i + n])
            i += n
        stamps = None
        if self._waiters is not None:
            ns = len(sends)
            stamps = (self._waiters[0].submit(per_msg[:ns]), self._waiters[1].submit(per_msg[ns:]))
        self._pending.append((step, phase, works, t_post, msgs, stamps))

    def wait(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        t0 = self.rec.mark()
        step, phase = pending[0][:2]
        finished = [self._finish(works, stamps) for (_, _, works, _, _, stamps) in pending]
        t1 = self.rec.mark()
        for (_, _, _, t_post, msgs, _), ends in zip(pending, finished):
            for side, _, n in msgs:
                if side == "send":
                    self.bytes_sent += n
                else:
                    self.bytes_received += n
            if self.rec.enabled:
                for j, (side, peer, n) in enumerate(msgs):
                    self.rec.add(step, phase, side, t_post, ends[j] if ends is not None else t1, peer, n)
        if self.rec.enabled:
            self.rec.add(step, phase, "wait", t0, t1)

    def _finish(self, works, stamps):
        """Block until one batch is done; its messages' completion stamps (None: not timed)."""
        if self.wait_hook is not None:
            self.wait_hook(True)
        ends = None
        if stamps is not None:
            ends = []
            for box, done in stamps:
                done.wait()
                for x in box:
                    if isinstance(x, BaseException):
                        raise x
                ends += box
        else:
            for w in works:
                w.wait()
        if self.wait_hook is not None:
            self.wait_hook(False)
        return ends

    def close(self) -> None:
        if self._waiters is not None:
            for w in self._waiters:
                w.close()
            self._waiters = None
