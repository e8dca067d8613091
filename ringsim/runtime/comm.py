"""The ring communicator: one batched send-to-next / receive-from-previous per step.

Usage per step (the same on every rank, so the batched point-to-point calls pair up)::

    comm.send_recv(send_tensors, recv_tensors)   # queue: each send goes to r+1, each recv from r−1
    comm.commit(step, phase)                     # post them all in one batch_isend_irecv
    ... compute ...
    comm.wait()                                  # block until this step's transfers are done

The ops are posted in a fixed order (all sends, then all receives, in the order queued), which
is what lets gloo and NCCL match them without tags. The communicator counts the bytes it sent
and received and, with a recording :class:`~ringsim.runtime.instrument.Recorder`, files per step
a ``send`` row (post → completion, peer r+1), a ``recv`` row (post → completion, peer r−1) and a
``wait`` row (the time the rank was blocked in :meth:`wait`).

Completion times on CPU come from two waiter threads (one per direction) that block on the gloo
work objects and stamp the moment each returns — so a transfer that finished during compute is
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

__all__ = ["RingComm"]


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
            works, box, done = item
            try:
                for w in works:
                    w.wait()
                box.append(time.perf_counter_ns())
            except BaseException as e:  # surfaced by the main thread's wait()
                box.append(e)
            done.set()

    def submit(self, works):
        box, done = [], threading.Event()
        self.q.put((works, box, done))
        return box, done

    def close(self):
        self.q.put(None)


class RingComm:
    def __init__(self, rank: int, world_size: int, recorder: Recorder | None = None, group=None,
                 timed_completion: bool | None = None):
        self.rank, self.world_size, self.group = rank, world_size, group
        self.next = (rank + 1) % world_size
        self.prev = (rank - 1) % world_size
        self.rec = recorder or NullRecorder(rank)
        self._sends: list[torch.Tensor] = []
        self._recvs: list[torch.Tensor] = []
        self._pending = None
        # called with True before blocking on a transfer and False after: lets a watchdog tell a
        # rank that waits on its peers from one stuck in its own work
        self.wait_hook = None
        self.bytes_sent = 0
        self.bytes_received = 0
        if timed_completion is None:
            timed_completion = self.rec.enabled and not self.rec.cuda
        self._waiters = (_Waiter(), _Waiter()) if timed_completion else None

    def send_recv(self, send_tensors, recv_tensors) -> None:
        self._sends += list(send_tensors)
        self._recvs += list(recv_tensors)

    def commit(self, step: int, phase: str) -> None:
        if self._pending is not None:
            raise RuntimeError("commit() before the previous step's wait()")
        if not self._sends and not self._recvs:
            return
        sends, recvs = self._sends, self._recvs
        self._sends, self._recvs = [], []
        ops = [dist.P2POp(dist.isend, t, self.next, self.group) for t in sends]
        ops += [dist.P2POp(dist.irecv, t, self.prev, self.group) for t in recvs]
        n_send = sum(t.numel() * t.element_size() for t in sends)
        n_recv = sum(t.numel() * t.element_size() for t in recvs)
        t_post = self.rec.mark()
        works = dist.batch_isend_irecv(ops)
        stamps = None
        if self._waiters is not None:
            stamps = (self._waiters[0].submit(works[: len(sends)]), self._waiters[1].submit(works[len(sends):]))
        self._pending = (step, phase, works, t_post, n_send, n_recv, stamps)

    def wait(self) -> None:
        if self._pending is None:
            return
        step, phase, works, t_post, n_send, n_recv, stamps = self._pending
        self._pending = None
        t0 = self.rec.mark()
        if self.wait_hook is not None:
            self.wait_hook(True)
        if stamps is not None:
            ends = []
            for box, done in stamps:
                done.wait()
                if isinstance(box[0], BaseException):
                    raise box[0]
                ends.append(box[0])
            t_send_end, t_recv_end = ends
        else:
            for w in works:
                w.wait()
            t_send_end = t_recv_end = None
        if self.wait_hook is not None:
            self.wait_hook(False)
        t1 = self.rec.mark()
        self.bytes_sent += n_send
        self.bytes_received += n_recv
        if self.rec.enabled:
            if t_send_end is None:
                t_send_end = t_recv_end = t1
            if n_send:
                self.rec.add(step, phase, "send", t_post, t_send_end, self.next, n_send)
            if n_recv:
                self.rec.add(step, phase, "recv", t_post, t_recv_end, self.prev, n_recv)
            self.rec.add(step, phase, "wait", t0, t1)

    def close(self) -> None:
        if self._waiters is not None:
            for w in self._waiters:
                w.close()
            self._waiters = None
