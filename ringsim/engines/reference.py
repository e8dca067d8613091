"""The reference engine: the program semantics in plain simpy, written to be read, not to be fast.

Every rank is a simpy process that runs its steps as the program says::

    for each step n:
        post the messages due at the step's start      (sends, then receives)
        compute for compute_s[n, r]
        post the messages due at the compute's end
        wait until every message the step waits for is done

Every message is a process too: it waits for its send post (and its receive post under
rendezvous, or when the receive is posted late), waits the route's latency, then streams its
bytes through :class:`FluidNetwork`, where all streaming flows share the links max-min fairly and
every rate is recomputed from scratch (:func:`ringsim.engines.network.max_min_rates`) whenever a
flow starts or ends. Nothing here is shared with the optimised engines but the rate function and
the program: tests compare them on random programs.
"""
from __future__ import annotations

import numpy as np
import simpy

from ..program import Program
from ..topology import Topology
from .des import EngineArrays, ProtocolStuck
from .network import max_min_rates

__all__ = ["run_reference", "FluidNetwork"]


class FluidNetwork:
    """Streaming flows over directed links, rates max-min fair, recomputed at every change."""

    def __init__(self, env: simpy.Environment, topology: Topology):
        self.env = env
        self.capacity = [l.bandwidth_Bps for l in topology.links]
        self.flows: list[dict] = []
        self.last = 0.0
        self.link_bytes: dict[int, float] = {}
        self.link_busy_s: dict[int, float] = {}
        self.changed = env.event()
        env.process(self._control())

    def stream(self, route: tuple, nbytes: float) -> simpy.Event:
        """A flow of ``nbytes`` along ``route`` starts streaming now; the event fires at its end."""
        done = self.env.event()
        if not route or nbytes <= 0:
            self._count(route, nbytes)
            done.succeed()
            return done
        self._advance()
        self.flows.append({"route": route, "left": float(nbytes), "bytes": float(nbytes), "rate": 0.0, "done": done})
        self._rates()
        if not self.changed.triggered:
            self.changed.succeed()
        return done

    def _count(self, route, nbytes) -> None:
        for lid in route:
            self.link_bytes[lid] = self.link_bytes.get(lid, 0.0) + nbytes
            self.link_busy_s.setdefault(lid, 0.0)

    def _advance(self) -> None:
        dt = self.env.now - self.last
        if dt > 0:
            busy = set()
            for f in self.flows:
                f["left"] -= f["rate"] * dt
                busy.update(f["route"])
            for lid in busy:
                self.link_busy_s[lid] = self.link_busy_s.get(lid, 0.0) + dt
        self.last = self.env.now

    def _rates(self) -> None:
        rates = max_min_rates([f["route"] for f in self.flows], self.capacity)
        for f, r in zip(self.flows, rates):
            f["rate"] = float(r)

    def _control(self):
        while True:
            if not self.flows:
                yield self.changed
                self.changed = self.env.event()
                continue
            t_next = min(self.env.now + f["left"] / f["rate"] for f in self.flows)
            yield self.env.any_of([self.changed, self.env.timeout(max(t_next - self.env.now, 0.0))])
            if self.changed.triggered:
                self.changed = self.env.event()
            self._advance()
            now = self.env.now
            ending = [f for f in self.flows if now + f["left"] / f["rate"] <= now + 1e-12 * max(now, 1e-12)]
            if ending:
                for f in ending:
                    self.flows.remove(f)
                    self._count(f["route"], f["bytes"])
                    f["done"].succeed()
                self._rates()


def run_reference(program: Program, compute_s: np.ndarray, topology: Topology, knobs) -> EngineArrays:
    """Run ``program`` (knobs already applied to its post times) with ``compute_s[n, r]``."""
    env = simpy.Environment()
    net = FluidNetwork(env, topology)
    flat = program.flat
    G, N, M = flat.world_size, flat.N, flat.M
    T = np.full((N + 1, G), np.nan)
    E = np.full((N, G), np.nan)
    XS = np.full(M, np.nan)
    XE = np.full(M, np.nan)
    send_posted = [env.event() for _ in range(M)]
    recv_posted = [env.event() for _ in range(M)]
    done = [env.event() for _ in range(M)]
    # what each rank posts and waits for at each step
    posts = {}   # (rank, n, "start"|"end") -> list of (message, side)
    waits = {}   # (rank, n) -> list of messages
    for m in range(M):
        n = int(flat.post_step[m])
        s, d = int(flat.src[m]), int(flat.dst[m])
        posts.setdefault((s, n, "end" if flat.send_end[m] else "start"), []).append((m, "send"))
        posts.setdefault((d, n, "end" if flat.recv_end[m] else "start"), []).append((m, "recv"))
        for who in (s, d):
            waits.setdefault((who, int(flat.wait_step[m])), []).append(m)

    def post(rank, n, when):
        items = posts.get((rank, n, when), [])
        for m, side in sorted(items, key=lambda x: (x[1] != "send", x[0])):  # sends, then receives
            (send_posted if side == "send" else recv_posted)[m].succeed()

    def message(m):
        route = tuple(topology.route(int(flat.src[m]), int(flat.dst[m])))
        needs = [send_posted[m]]
        if knobs.rendezvous or flat.recv_end[m]:
            needs.append(recv_posted[m])
        yield env.all_of(needs)
        XS[m] = env.now
        yield env.timeout(topology.route_latency_s(route))
        yield net.stream(route, float(flat.bytes[m]))
        XE[m] = env.now
        done[m].succeed()

    def rank(r):
        for n in range(N):
            T[n, r] = env.now
            post(r, n, "start")
            yield env.timeout(float(compute_s[n, r]))
            E[n, r] = env.now
            post(r, n, "end")
            yield env.all_of([done[m] for m in waits.get((r, n), [])])
        T[N, r] = env.now

    for m in range(M):
        env.process(message(m))
    for r in range(G):
        env.process(rank(r))
    env.run()
    if np.isnan(T[N]).any():
        stuck = [r for r in range(G) if np.isnan(T[N, r])]
        raise ProtocolStuck(f"program stuck: ranks {stuck[:8]} never finished; a partner never posted")
    return EngineArrays(T, E, XS, XE, net.link_bytes, net.link_busy_s)
