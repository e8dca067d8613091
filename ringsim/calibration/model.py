"""The calibrated cost model: compute time of a program's blocks from a calibration file.

Per (step, rank) the block's kind (by its exact pairs, :func:`ringsim.costs.classify_blocks`) and
phase pick a fitted entry, evaluated at ``work = pairs × flops_per_pair / flops_per_pair_ref``
(the per-pair cost scaled by B·H·(d_qk + d_v) relative to the fitted workload). When the
calibration came from a CPU host and the run would oversubscribe it, the fit measured at that
load level (``contention.by_load``, core-seconds) goes through the processor-sharing replay of the
program (:func:`ringsim.calibration.sharing.share_cores`) if the level has runs of its own (up to
``SHARE_MAX_WORLD_SIZE`` ranks), else the base fit × ``load^gamma``; ÷ the rank's speed factor
(what-if stragglers). Empty blocks cost the measured overhead of an empty step (0 if never
measured); steps without compute ops cost nothing.

``apply_to_topology``: links whose ``link_class`` has a fit get ``bandwidth_Bps`` = the fitted
bandwidth and ``latency_s`` = the fitted per-hop latency divided by the number of links a ring hop
crosses (so a hop's route latency is the fitted one). If the topology has none of the fitted
classes, the fit of the traces' own class is applied to *all* links — a calibration from one
machine then describes every link of the target, which is what validating a run on that machine
needs. Told the program (its world size), transfers on a shared CPU host get their fitted
core-sharing slowdown too.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import replace

import numpy as np

from ..costs import CostContext, CostModel, classify_blocks, speed_factors
from ..program import KernelOp
from ..topology import Topology
from ..units import InputError, jsonable, read_json, write_atomic
from .fit import DISPERSION_Q, FORMAT, SHARE_MAX_WORLD_SIZE, predict_entry, predict_memory_ops
from .measured import step_ops
from .sharing import share_cores

__all__ = ["CalibratedCost", "load_calibration", "write_calibration"]


class CalibratedCost(CostModel):
    """Compute times from a calibration document (see the module docstring)."""

    name = "calibrated"

    def __init__(self, doc: dict, path: str | None = None, sample_seed: int | None = None, profile=None):
        self.sample_seed = sample_seed  # when set: every block × a factor drawn from the dispersion
        self.release_s = None  # a drawn start skew ([G] s) the shared-core replay starts ranks by
        self.doc = doc
        self.path = path
        self.compute = doc["compute"]
        self.ref_fpp = float(doc["reference_workload"]["flops_per_pair"])
        self.dims_known = bool(doc["reference_workload"].get("dims_known", True))
        self.links = doc.get("links", {})
        self.contention = doc.get("contention", {})
        basis = doc.get("work_basis") or {}
        self.profile = profile
        if profile is None and basis.get("kind") == "profile-seconds":  # calibrate --profile
            from ..kernelprofile import profile_from_doc

            self.profile = profile_from_doc(basis["profile"], label=f"{path or 'calibration'}: work_basis.profile")

    def with_dispersion(self, seed: int, world_size: int | None = None) -> "CalibratedCost":
        """The same model drawing every block's time from its fitted value × a factor sampled
        (seeded, per phase) from the measured block-to-block dispersion, and — given the world
        size, when the calibration measured runs of that size — the ranks' start skew: one
        measured run's vector of first-step offsets (per rank, its median iteration), ranks shuffled (``release_s``; the
        caller gives the engine the same). One draw is one plausible iteration; the median makespan
        over draws predicts the median over measured iterations, which is a maximum over ranks and
        so lies above the makespan of median blocks."""
        out = CalibratedCost(self.doc, self.path, seed, self.profile)
        vectors = self._skew_vectors(world_size)
        if vectors:
            rng = np.random.default_rng([int(seed), 2])
            out.release_s = rng.permutation(np.asarray(vectors[int(rng.integers(len(vectors)))], float))
        return out

    def has_dispersion(self, world_size: int | None = None) -> bool:
        """Whether draws differ: block dispersion, or (given the world size) a measured start skew."""
        return any(p in (self.doc.get("dispersion") or {}) for p in ("fwd", "bwd")) or bool(self._skew_vectors(world_size))

    def _skew_vectors(self, world_size: int | None) -> list:
        """The calibration's start-skew vectors for ``world_size`` ranks ([] when none or no size)."""
        if not world_size:
            return []
        return ((self.doc.get("start_skew") or {}).get("by_world_size") or {}).get(str(world_size)) or []

    def _draw(self, phase: str, shape) -> np.ndarray:
        q = (self.doc.get("dispersion") or {}).get(phase)
        if self.sample_seed is None or not q:
            return np.ones(shape)
        rng = np.random.default_rng([int(self.sample_seed), 0 if phase == "fwd" else 1])
        return np.interp(rng.random(shape), DISPERSION_Q, np.asarray(q, float))

    def _load(self, world_size: int) -> float:
        c = self.contention
        if not c.get("cpu_cores"):
            return 1.0
        return max(world_size * float(c.get("threads_per_rank") or 1) / float(c["cpu_cores"]), 1.0)

    def load_factor(self, world_size: int) -> float:
        c = self.contention
        if not c.get("applied"):
            return 1.0
        return float(self._load(world_size) ** c["gamma"])

    def _nearest_level(self, load: float) -> dict:
        """For a load level without runs of its own, the measured level nearest to it (in log load):
        its fits are core-seconds, which do not depend on the load (the pooled runs with a core
        per rank show it), and it brings the transfer and off-core gap fits."""
        levels = self.contention.get("by_load") or {}
        if not levels:
            return self.compute
        return levels[min(levels, key=lambda k: (abs(math.log(float(k) / load)), float(k)))]

    # ---- pricing --------------------------------------------------------------------------------
    def _blocks(self, ctx: CostContext, fits: dict) -> tuple[np.ndarray, list]:
        """Seconds of every (step, rank) block from ``fits`` (no sharing, no speed factor) and the
        steps' phases; steps without a kernel call are 0."""
        prog = ctx.program
        f = prog.flat
        if self.profile is not None:  # work = the profile's seconds for the block's calls
            from .fit import profile_work_s

            work = profile_work_s(self.profile, prog, ctx.workload)
        else:
            fpp = float(ctx.workload.flops_per_pair("fwd")) if self.dims_known else self.ref_fpp
            work = f.work_pairs * (fpp / self.ref_fpp)
        kinds = classify_blocks(f.pairs, ctx.tokens_per_rank)
        has_kernel, mem = step_ops(prog)
        out = np.zeros(work.shape)
        phases = np.array(f.step_phase)
        for ph in ("fwd", "bwd"):
            rows = has_kernel & (phases == ph)
            if rows.any():
                k, w = kinds[rows], work[rows]
                sub = np.zeros(w.shape)
                for kind in np.unique(k):
                    m = k == kind
                    sub[m] = predict_entry(fits, ph, str(kind), w[m])
                # the memory ops of the blocks that make calls, where the fits price them apart
                sub += np.where(w > 0, predict_memory_ops(fits, ph, mem[rows]), 0.0)
                out[rows] = sub
            # steps of memory ops only (no kernel slot): the fitted memory-step time by their bytes
            mrows = ~has_kernel & (phases == ph)
            if mrows.any() and ph in fits and "memory" in fits[ph]:
                b = mem[mrows]
                out[mrows] = np.where(b > 0, predict_entry(fits, ph, "memory", b.ravel()).reshape(b.shape), 0.0)
        return out, phases

    def step_seconds(self, ctx: CostContext) -> np.ndarray:
        G = ctx.program.world_size
        load = self._load(G)
        level = (self.contention.get("by_load") or {}).get(f"{load:g}") if load > 1 else None
        sharing = self.contention.get("sharing")
        speed = speed_factors(ctx.topology, G)[None, :]
        if load > 1 and sharing and G <= int(sharing.get("max_world_size", SHARE_MAX_WORLD_SIZE)):
            return self._shared(ctx, level or self._nearest_level(load), float(sharing["slots"])) / speed
        if level is not None:
            out, _ = self._blocks(ctx, level)
        else:
            out, phases = self._blocks(ctx, self.compute)
            out = out * self.load_factor(G)
            for ph in ("fwd", "bwd"):  # a core per rank (an oversubscribed ring's variability is in its gaps)
                rows = phases == ph
                if rows.any():
                    out[rows] = out[rows] * self._draw(ph, out[rows].shape)
        return out / speed

    def call_seconds(self, workload, topology, q_rows, k_rows, pairs, kind, phase, tiles=None, heads=None):
        """Synthetic calls (the hide-block search): the phase's pooled fit at the calls' work."""
        if self.profile is not None:
            from ..costs.kernels import ProfileCost

            work = ProfileCost(self.profile).call_seconds(workload, topology, q_rows, k_rows, pairs, kind, phase,
                                                          tiles, heads) - topology.device.kernel_overhead_s
            work = np.maximum(work, 0.0)
        else:
            fpp = float(workload.flops_per_pair("fwd")) if self.dims_known else self.ref_fpp
            work = np.asarray(pairs, float) * (fpp / self.ref_fpp) * self.head_share(workload, heads)
        t = predict_entry(self.compute, phase, "*", work)
        return np.where(np.asarray(pairs) > 0, t, 0.0)

    def _shared(self, ctx: CostContext, fits: dict, slots: float) -> np.ndarray:
        """Block times of a program that oversubscribes the host: core-seconds per block from
        ``fits``, plus the level's off-core gaps, then :func:`share_cores` over the program with
        its messages as core-seconds too (``fits["transfer"]``)."""
        flat = ctx.program.flat
        work, phases = self._blocks(ctx, fits)
        gaps = fits.get("gap_s") or {}
        delay = np.zeros(work.shape)
        has_kernel, _ = step_ops(ctx.program)
        first = True
        for n in range(flat.N):
            if not has_kernel[n]:  # the off-core gap was measured before blocks with a kernel slot
                continue
            ph = phases[n]
            delay[n] = float(gaps.get("first", 0.0)) if first and ph == "fwd" else float(gaps.get(ph, 0.0))
            first = False
        xfer = None
        tf = fits.get("transfer")
        if tf:
            inv_bw = 1.0 / float(tf["bandwidth_Bps"]) if math.isfinite(float(tf["bandwidth_Bps"])) else 0.0
            xfer = float(tf["latency_s"]) + flat.bytes * inv_bw
        release = self.release_s if self.release_s is not None and len(self.release_s) == flat.world_size else None
        return share_cores(flat, work, slots, delay, xfer, release)

    def apply_to_topology(self, topology: Topology, program=None) -> Topology:
        if not self.links:
            return topology
        classes = {l.link_class for l in topology.links}
        fitted = {c: f for c, f in self.links.items() if c in classes}
        fallback = None
        if not fitted:
            own = self.doc.get("trace_link_class")
            fallback = self.links.get(own) or next(iter(self.links.values()))
        hops = topology.ring_hops(topology.num_gpus) if topology.num_gpus > 1 else []
        world_size = program.world_size if program is not None else None

        def per_hop_links(cls):
            counts = [sum(1 for i in h["route"] if cls is None or topology.links[i].link_class == cls) for h in hops]
            counts = [c for c in counts if c > 0]
            return max(1, int(np.median(counts))) if counts else 1

        new = []
        for l in topology.links:
            f = fitted.get(l.link_class) if fitted else fallback
            if f is None:
                new.append(l)
                continue
            n = per_hop_links(l.link_class if fitted else None)
            bw = float(f["bandwidth_Bps"]) if math.isfinite(float(f["bandwidth_Bps"])) else 1e30
            slow = 1.0
            if world_size and f.get("contention") and self.contention.get("cpu_cores"):
                slow = self._load(world_size) ** f["contention"]["gamma"]
            new.append(replace(l, bandwidth_Bps=bw / slow, latency_s=f["latency_s"] * slow / n))
        return topology.with_links(new, "[calibrated]")

    def describe(self) -> dict:
        return {"name": self.name, "path": self.path, "traces": [t["path"] for t in self.doc.get("traces", [])],
                "compute_mape": self.doc.get("compute_mape"),
                "contention_gamma": self.contention.get("gamma") if self.contention.get("applied") else None}


def load_calibration(path: str | os.PathLike) -> CalibratedCost:
    path = os.fspath(path)
    doc = read_json(path, "calibration file", f"create it with `ringsim calibrate TRACE... -o {path}`")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "compute" not in doc:
        raise InputError(f"{path} is not a ringsim calibration (format {FORMAT!r}); create one with `ringsim calibrate`")
    return CalibratedCost(doc, path)


def write_calibration(doc: dict, path: str) -> None:
    write_atomic(path, json.dumps(jsonable(doc), indent=2) + "\n")
