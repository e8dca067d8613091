"""Cost models: the seconds of a program's compute ops (see :mod:`ringsim.costs.base`)."""
from .base import CostContext, CostModel, speed_factors
from .kernels import ProfileCost, resolve_kernels
from .roofline import RooflineCost

__all__ = ["CostModel", "CostContext", "RooflineCost", "ProfileCost", "resolve_kernels", "speed_factors",
           "classify_blocks", "BLOCK_KINDS"]

BLOCK_KINDS = ("empty", "full", "diagonal", "lower", "partial")


def classify_blocks(pairs, tokens_per_rank: int):
    """A block's kind by its exact pairs against an n × n block (n = tokens per rank): ``full``
    (n²), ``diagonal`` (n(n+1)/2, the causal triangle with its diagonal), ``lower`` (n(n−1)/2,
    striped's blocks from later owners), ``empty`` (0), else ``partial``. The calibration fits
    compute time per kind; works on arrays of any shape."""
    import numpy as np

    pairs = np.asarray(pairs)
    n = int(tokens_per_rank)
    kinds = np.full(pairs.shape, "partial", dtype=object)
    kinds[pairs == n * n] = "full"
    kinds[pairs == n * (n + 1) // 2] = "diagonal"
    kinds[(pairs == n * (n - 1) // 2) & (n > 1)] = "lower"
    kinds[pairs == 0] = "empty"
    return kinds
