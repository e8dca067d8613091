"""The link model: transfers as flows sharing full-duplex links max-min fairly.

Picture a set of pipes (directed links, one per direction of a full-duplex cable), each with a
capacity in bytes per second and a propagation latency. A **transfer** is a *flow* of ``nbytes``
along a fixed route (a tuple of directed link ids, see :meth:`Topology.route`):

1. it first waits the route's total latency (the sum of its links' ``latency_s``: the alpha term);
2. then it *streams* its bytes. While streaming it holds a rate; the rates of all streaming flows are
   the **max-min fair** allocation (progressive filling, a.k.a. water-filling): every flow's rate
   rises together until some link is full; the flows crossing a full link freeze at that rate, and
   the others keep rising until every flow is frozen. A flow alone on its route therefore streams
   at the route's bottleneck bandwidth, and the transfer takes ``latency + bytes / bottleneck``.
3. Rates change only when a flow starts or stops streaming, and then only for the flows that are
   (transitively) connected to it through shared links — its *connected component*. So a ring
   whose hops share no link pays O(1) work per event, however many ranks it has. Flows that start
   or stop at the same instant are settled together: one recomputation per component per instant.

:func:`max_min_rates` is the allocation as a pure function; :class:`FlowNetwork` runs it on an
:class:`~ringsim.engines.loop.EventLoop`.
"""
from __future__ import annotations

from heapq import heappush
from typing import Sequence

import numpy as np

from ..topology import Topology
from .loop import EventLoop

__all__ = ["max_min_rates", "FlowNetwork"]

_SAT_RTOL = 1e-12  # a link whose fair share is within this of the minimum saturates in the same round


def _progressive_filling(routes: Sequence[Sequence[int]], capacity: Sequence[float]) -> list[float]:
    """Max-min fair rates for flows over directed links (pure Python; see :func:`max_min_rates`)."""
    n = len(routes)
    rates = [0.0] * n
    # links actually used, with the unfrozen flows crossing them
    on_link: dict[int, list[int]] = {}
    frozen = [False] * n
    for f, route in enumerate(routes):
        if not route:
            rates[f] = float("inf")  # no link: nothing limits it
            frozen[f] = True
            continue
        for lid in route:
            on_link.setdefault(lid, []).append(f)
    remaining = {lid: float(capacity[lid]) for lid in on_link}
    count = {lid: len(fs) for lid, fs in on_link.items()}
    level = 0.0
    active = {lid for lid in on_link}
    while active:
        # the smallest fair share of what is left on a link with unfrozen flows
        shares = {lid: remaining[lid] / count[lid] for lid in active}
        delta = min(shares.values())
        level += delta
        saturated = [lid for lid, sh in shares.items() if sh <= delta * (1.0 + _SAT_RTOL)]
        for lid in active:
            remaining[lid] -= delta * count[lid]
        newly = []
        for lid in saturated:
            for f in on_link[lid]:
                if not frozen[f]:
                    frozen[f] = True
                    rates[f] = level
                    newly.append(f)
        for f in newly:
            for lid in routes[f]:
                count[lid] -= 1
        active = {lid for lid in active if count[lid] > 0}
    return rates


def max_min_rates(routes: list[tuple[int, ...]], capacity_Bps: Sequence[float]) -> np.ndarray:
    """Max-min fair rate (bytes/s) of each flow, by progressive filling.

    ``routes[f]`` is the tuple of directed link ids flow ``f`` crosses; ``capacity_Bps[l]`` is link
    ``l``'s capacity. All unfrozen flows' rates rise together; when a link fills, the flows on it
    freeze. Example: links A (1 GB/s) and B (2 GB/s), flows {A}, {A, B}, {B}: A fills first at
    0.5 GB/s each, then the flow alone on B takes the rest of B: rates 0.5, 0.5, 1.5 GB/s.
    A flow with an empty route gets ``inf``.
    """
    return np.array(_progressive_filling(routes, capacity_Bps), dtype=np.float64)


class _Flow:
    __slots__ = ("id", "route", "nbytes", "remaining", "rate", "last_s", "version", "on_done", "token",
                 "stream_start_s", "bottleneck", "rid", "held")

    def __init__(self, fid, route, nbytes, on_done, token, bottleneck, rid):
        self.id = fid
        self.route = route
        self.rid = rid  # the route's number (see FlowNetwork.route_info)
        self.nbytes = nbytes
        self.remaining = nbytes
        self.rate = 0.0
        self.last_s = 0.0
        self.version = 0
        self.on_done = on_done
        self.token = token
        self.stream_start_s = 0.0
        self.bottleneck = bottleneck
        self.held = None  # (due time, event id) of a completion timer not yet queued (see _stream)


class FlowNetwork:
    """Flows over a topology's directed links on an event loop.

    Like water in a set of pipes: each open tap (a streaming flow) gets the max-min fair share of
    the pipes it runs through, and when a tap opens or closes the water redistributes only among
    the taps connected to it through shared pipes.

    :meth:`start_flow` starts a flow and calls ``on_done(token, time_s)`` when its last byte
    arrives. With
    ``record=True`` every change of a link's total rate is logged in ``rate_log`` as
    ``(time_s, link_id, total_rate_Bps)``. ``link_bytes`` and ``link_busy_s`` (time with at least one
    streaming flow; the latency wait does not occupy a link) are kept per directed link id.

    Events per transfer: one for the end of its latency (when it starts streaming and may change
    other flows' rates), one completion timer per rate it streams at (a timer made stale by a rate
    change is recognised by its version and ignored: queued entries are never cancelled), and one
    flush per instant at which shared links changed. Flows whose latency ends at the same instant
    share one event, and so do the flows that one recomputation makes due at the same instant (n
    hops synchronised on an uplink cost about two events between them, not 2n). A flow that starts
    alone on its links but is joined by a flow of the same latency-end event does not queue the
    timer it would hold alone until the recomputation shows whether it stays valid (it is queued
    then, under the event id it was given at the start, so the queue's order is unchanged). A
    ``private`` flow (see :meth:`start_flow`) costs one event. None of this changes a result: rates
    are settled once per instant after every start and end at that instant, every event is
    dispatched in the same order, and every time is computed with the same floating-point
    operations as one event per flow and phase would.
    """

    def __init__(self, loop: EventLoop, topology: Topology, record: bool = False):
        self.loop = loop
        self.topology = topology
        n = len(topology.links)
        self.capacity = [l.bandwidth_Bps for l in topology.links]
        self.latency = [l.latency_s for l in topology.links]
        self.record = record
        self.rate_log: list[tuple[float, int, float]] = []
        # per directed link id: streaming flows {flow id: flow} (insertion-ordered), bytes, busy time
        self._streaming: list[dict] = [{} for _ in range(n)]
        self._bytes = [0.0] * n
        self._busy = [0.0] * n
        self._used: list[int] = []  # link ids that carried a finished flow, in first-finish order
        self._used_flag = bytearray(n)
        self._busy_since = [0.0] * n
        self._next_id = 0
        self._dirty: set = set()
        self._flush_pending = False
        self._starting: dict[float, list] = {}  # flows whose latency ends at a time, by that time
        self._route_info: dict[tuple, tuple[float, float, int]] = {}  # route → (latency_s, bottleneck_Bps, number)
        # per route number: the route, whether a flow on it has finished (its links are in _used),
        # and its links that another route also crosses (the only links a component can grow through)
        self._route_by_rid: list[tuple] = []
        self._route_finished = bytearray()
        self._route_shared: list[list[int]] = []
        self._route_min: list[int] = []  # the smallest link id of each route (-1: empty route)
        self._link_first_rid: dict[int, int] = {}  # link id → the first route crossing it
        self._link_shared = bytearray(n)           # 1 once two routes cross the link
        # max-min rates of a component, keyed by its flows' route numbers in flow-id order: a ring
        # meets the same few components step after step (the rates are a pure function of the routes)
        self._rates_cache: dict[tuple, list[float]] = {}
        self.active_flows = 0

    @property
    def link_bytes(self) -> dict[int, float]:
        """Directed link id → bytes of the finished flows that crossed it."""
        return {l: self._bytes[l] for l in self._used}

    @property
    def link_busy_s(self) -> dict[int, float]:
        """Directed link id → time with at least one streaming flow (links that carried a flow)."""
        return {l: self._busy[l] for l in self._used}

    # ---- public -----------------------------------------------------------------------------
    def route_info(self, route: tuple) -> tuple[float, float, int]:
        """``(latency_s, bottleneck_Bps, number)`` of a route (cached; the number names the route)."""
        info = self._route_info.get(route)
        if info is None:
            rid = len(self._route_info)
            info = self._route_info[route] = (self.topology.route_latency_s(route),
                                              min((self.capacity[l] for l in route), default=float("inf")),
                                              rid)
            self._route_by_rid.append(route)
            self._route_min.append(min(route, default=-1))
            self._route_finished.append(0)
            shared = []
            for lid in dict.fromkeys(route):
                first = self._link_first_rid.setdefault(lid, rid)
                if first != rid:
                    shared.append(lid)
                    if not self._link_shared[lid]:  # the first route crossing it now shares it
                        self._link_shared[lid] = 1
                        self._route_shared[first].append(lid)
            self._route_shared.append(shared)
        return info


    def start_flow(self, route: tuple, nbytes: float, on_done, token, info: tuple[float, float, int] | None = None,
                   private: bool = False) -> None:
        """Start a flow of ``nbytes`` (a float) along ``route`` (a tuple) now; at completion call
        ``on_done(token, completion_time_s)``. ``info`` is ``route_info(route)`` if the caller has it.

        ``private=True`` is the caller's promise that no other flow streams on any link of this
        route while this one does (e.g. a ring hop whose links no other hop crosses: its transfers
        are sequential). Such a flow streams at the route's bottleneck from the end of its latency
        to ``(now + latency) + nbytes / bottleneck``, exactly as the general path computes it, and
        costs one event (its completion) instead of two. Ignored while recording the rate log."""
        if info is None:
            info = self.route_info(route)
        latency_s, bottleneck, rid = info
        fid = self._next_id
        self._next_id = fid + 1
        flow = _Flow(fid, route, nbytes, on_done, token, bottleneck, rid)
        self.active_flows += 1
        loop = self.loop
        if private and route and nbytes > 0 and not self.record:
            flow.stream_start_s = loop.now + latency_s  # the clock when the latency ends
            end = flow.stream_start_s + nbytes / bottleneck
            heappush(loop.queue, (end, next(loop.seq), self._on_private_done, flow))
            return
        if latency_s > 0:
            # flows whose latency ends at the same instant start streaming in one event, in the
            # order they were started (their rates are settled together by one flush anyway)
            due = loop.now + latency_s
            batch = self._starting.get(due)
            if batch is None:
                batch = self._starting[due] = [flow]
                heappush(loop.queue, (due, next(loop.seq), self._on_latency, batch))
            else:
                batch.append(flow)
        else:
            self._stream((flow,))

    # ---- internals ----------------------------------------------------------------------------
    def _on_latency(self, batch) -> None:
        del self._starting[self.loop.now]  # keyed by the time it fires at
        self._stream(batch)

    def _stream(self, flows) -> None:
        """These flows start streaming now, in order.

        A flow alone on every link of its route streams at its bottleneck rate and nothing else
        changes; otherwise its links are marked for the end-of-instant recomputation. A flow alone
        at its turn but joined by a later flow of the same batch would see its completion timer
        made stale or confirmed by that recomputation: the timer takes its event id now (its place
        in the loop's queue) but is queued only when it still holds: at the end of the batch if the
        flow is still alone, else by :meth:`_recompute` if the rate is unchanged."""
        loop = self.loop
        now = loop.now
        queue, seq = loop.queue, loop.seq
        streaming, busy_since, route_min = self._streaming, self._busy_since, self._route_min
        held = None
        for flow in flows:
            flow.stream_start_s = now
            flow.last_s = now
            route = flow.route
            if not route or flow.remaining <= 0:
                self._finish(flow, streaming=False)
                continue
            solo = True
            fid = flow.id
            for lid in route:
                s = streaming[lid]
                if s:
                    solo = False
                else:
                    busy_since[lid] = now
                s[fid] = flow
            if solo:  # alone on every link of its route: the bottleneck rate, nothing else changes
                rate = flow.rate = flow.bottleneck
                flow.version += 1
                due = now + flow.remaining / rate
                if due > now:
                    flow.held = (due, next(seq))
                    if held is None:
                        held = [flow]
                    else:
                        held.append(flow)
                else:
                    heappush(queue, (due, next(seq), self._on_timer, (flow, flow.version)))
                if self.record:
                    for lid in sorted(route):
                        self.rate_log.append((now, lid, rate))
            else:
                # rates on its links must be recomputed; done once per instant, after every flow
                # that starts or ends at this instant has done so (see _flush: its smallest link
                # stands for the route)
                self._dirty.add(route_min[flow.rid])
                if not self._flush_pending:
                    self._flush_pending = True
                    # behind the events already due now
                    heappush(queue, (now, next(seq), self._flush, None))
        if held is not None:
            for flow in held:
                for lid in flow.route:
                    if len(streaming[lid]) > 1:
                        break  # joined at this instant: _recompute queues the timer or drops it
                else:
                    due, eid = flow.held
                    flow.held = None
                    heappush(queue, (due, eid, self._on_timer, (flow, flow.version)))

    def _flush(self, _arg) -> None:
        """Recompute the rates of every component with a marked link, in the order of their
        smallest marked link. A flow that started sharing a link marks only its route's smallest
        link: it still streams now (its first timer comes from this flush), so its whole route lies
        in one component and that link is the smallest its route would add: the same components,
        seeded from the same links in the same order, as marking the whole route."""
        self._flush_pending = False
        dirty, self._dirty = self._dirty, set()
        streaming = self._streaming
        seen: set = set()
        for lid in sorted(dirty):
            if lid not in seen and streaming[lid]:
                seen |= self._recompute(lid)

    def _component(self, seed_link: int) -> tuple[list[_Flow], set]:
        """Streaming flows connected to ``seed_link`` through shared links, and their links.

        Every flow on a route crosses all of its links, so the search enters each route once and
        continues only through the route's links that other routes also cross: a link only one
        route crosses carries that route's flows and nothing else."""
        streaming, route_shared, routes = self._streaming, self._route_shared, self._route_by_rid
        flows: dict[int, _Flow] = {}
        rids: set = set()
        links = {seed_link}
        stack = [seed_link]
        while stack:
            for fid, f in streaming[stack.pop()].items():
                if fid not in flows:
                    flows[fid] = f
                    rid = f.rid
                    if rid not in rids:
                        rids.add(rid)
                        for lid in route_shared[rid]:
                            if lid not in links:
                                links.add(lid)
                                stack.append(lid)
        for rid in rids:
            links.update(routes[rid])
        return [flows[k] for k in sorted(flows)], links

    def _rates(self, comp: list[_Flow]) -> list[float]:
        """Max-min rates of a component's flows (see :meth:`_solve`), cached by its routes."""
        if len(comp) == 1:
            return [comp[0].bottleneck]
        key = tuple([f.rid for f in comp])
        rates = self._rates_cache.get(key)
        if rates is None:
            if len(self._rates_cache) >= 4096:  # bounded: irregular flow patterns never repeat
                self._rates_cache.clear()
            rates = self._rates_cache[key] = self._solve(comp)
        return rates

    def _solve(self, comp: list[_Flow]) -> list[float]:
        """Max-min rates. Shortcut for the common case where every flow crosses a link that fills
        in the first round of progressive filling (e.g. n flows sharing one uplink): all get that
        round's level, exactly what :func:`_progressive_filling` returns."""
        capacity = self.capacity
        count: dict[int, int] = {}
        for f in comp:
            for lid in f.route:
                count[lid] = count.get(lid, 0) + 1
        share = {lid: float(capacity[lid]) / c for lid, c in count.items()}
        delta = min(share.values())
        limit = delta * (1.0 + _SAT_RTOL)
        for f in comp:
            for lid in f.route:
                if share[lid] <= limit:
                    break
            else:  # some flow is not frozen in the first round: the full algorithm
                return _progressive_filling([f.route for f in comp], capacity)
        return [0.0 + delta] * len(comp)

    def _recompute(self, seed_link: int) -> set:
        """New max-min rates for the component reached from ``seed_link``; returns its links."""
        loop = self.loop
        now = loop.now
        queue, seq = loop.queue, loop.seq
        comp, links = self._component(seed_link)
        new_rates = self._rates(comp)
        # new completion timers; flows due at the same instant share one event (they would have
        # been consecutive events anyway: same time, scheduled one after the other, here)
        timers: dict[float, list] = {}
        for f, rate in zip(comp, new_rates):
            if f.rate == rate:  # unchanged: its completion timer still holds
                if f.held is not None:  # queued now, in the place it was given (see _stream)
                    due, eid = f.held
                    f.held = None
                    heappush(queue, (due, eid, self._on_timer, (f, f.version)))
                continue
            f.held = None  # the timer it held alone would have been stale
            # bytes sent since the last rate change
            f.remaining -= f.rate * (now - f.last_s)
            f.last_s = now
            f.rate = rate
            f.version += 1
            remaining = f.remaining
            due = now + (remaining if remaining >= 0.0 else 0.0) / rate  # max(remaining, 0.0) / rate
            group = timers.get(due)
            if group is None:
                timers[due] = [(f, f.version)]
            else:
                group.append((f, f.version))
        for due, group in timers.items():
            heappush(queue, (due, next(seq), self._on_timers, group))
        if self.record:
            for lid in sorted(links):
                total = sum(f.rate for f in self._streaming[lid].values())
                self.rate_log.append((now, lid, total))
        return links

    def _on_private_done(self, flow) -> None:
        now = self.loop.now
        flow.remaining = 0.0
        nbytes = flow.nbytes
        bytes_, busy = self._bytes, self._busy
        for lid in flow.route:
            bytes_[lid] += nbytes
            busy[lid] += now - flow.stream_start_s
        if not self._route_finished[flow.rid]:
            self._register_used(flow)
        self.active_flows -= 1
        flow.on_done(flow.token, now)

    def _register_used(self, flow: _Flow) -> None:
        """The first finished flow of its route: its links join ``link_bytes`` / ``link_busy_s``."""
        self._route_finished[flow.rid] = 1
        used_flag = self._used_flag
        for lid in flow.route:
            if not used_flag[lid]:
                used_flag[lid] = 1
                self._used.append(lid)

    def _on_timers(self, group) -> None:
        """Completion timers of flows due at this instant: :meth:`_finish` for each in turn."""
        finish = self._finish
        for flow, version in group:
            if version == flow.version:  # else the rate changed since this timer was set
                finish(flow, True)

    def _on_timer(self, arg) -> None:
        flow, version = arg
        if version != flow.version:
            return  # the rate changed since this timer was set
        self._finish(flow, streaming=True)

    def _finish(self, flow: _Flow, streaming: bool) -> None:
        """The flow's last byte arrived now: count its bytes, free its links (a link left empty
        ends a busy period; one still shared is marked for recomputation), call its ``on_done``."""
        now = self.loop.now
        flow.remaining = 0.0
        nbytes = flow.nbytes
        route = flow.route
        bytes_ = self._bytes
        if streaming:
            streaming_ = self._streaming
            fid = flow.id
            dirty = False
            for lid in route:
                bytes_[lid] += nbytes
                s = streaming_[lid]
                del s[fid]
                if s:
                    dirty = True
                    self._dirty.add(lid)
                else:
                    self._busy[lid] += now - self._busy_since[lid]
                    if self.record:
                        self.rate_log.append((now, lid, 0.0))
            if dirty and not self._flush_pending:
                self._flush_pending = True
                loop = self.loop
                heappush(loop.queue, (now, next(loop.seq), self._flush, None))
        else:
            for lid in route:
                bytes_[lid] += nbytes
        if not self._route_finished[flow.rid]:
            self._register_used(flow)
        self.active_flows -= 1
        flow.on_done(flow.token, now)
