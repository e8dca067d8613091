"""`ringsim run --check` can fail on the bug it exists for: a mask bug in the ring's own code.

The ring's blocks take their mask from the plan (:meth:`ringsim.schedules.Mask.bounds`); the
checker's reference mask is written from the definitions (:mod:`ringsim.runtime.reference`). Here
the ring's arithmetic runs block by block in one process (as in test_runtime_numerics), its
outputs go through the real :func:`~ringsim.runtime.runner.check_outputs`, and a sliding window
one token too wide — injected into the ring's mask code — must fail the check.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from ringsim.runtime.reference import dense_mask  # noqa: E402
from ringsim.runtime.runner import RunConfig, check_outputs, make_inputs  # noqa: E402
from ringsim.schedules import Mask, Plan  # noqa: E402
from test_runtime_numerics import _simulate_ring  # noqa: E402


def _ring_results(cfg: RunConfig) -> list[dict]:
    """Every rank's --check outputs (its own tokens, local order), from the ring's block code."""
    plan = Plan(cfg.schedule, cfg.world_size, cfg.seq_len, cfg.mask)
    q, k, v, dout = make_inputs(cfg)
    glob = dict(zip(("out", "lse", "dq", "dk", "dv"), _simulate_ring(plan, q, k, v, dout)))
    names = ["out", "lse"] + (["dq", "dk", "dv"] if cfg.phase == "fwd+bwd" else [])
    return [{"rank": r, "outputs": {n: glob[n][:, :, torch.as_tensor(plan.tokens(r))].float() for n in names}}
            for r in range(cfg.world_size)]


def _cfg(mask, phase, schedule="zigzag"):
    return RunConfig(world_size=2, schedule=schedule, seq_len=48, heads=2, head_dim=8, mask=mask, phase=phase,
                     check=True).validate()


def test_dense_mask_is_the_definition():
    rows = dense_mask("sliding:3", 5).int().tolist()
    assert rows == [[1, 0, 0, 0, 0],
                    [1, 1, 0, 0, 0],
                    [1, 1, 1, 0, 0],  # the query and the W - 1 = 2 keys before it
                    [0, 1, 1, 1, 0],
                    [0, 0, 1, 1, 1]]
    assert dense_mask("causal", 3).int().tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    assert bool(dense_mask("full", 4).all())


@pytest.mark.parametrize("mask", ["causal", "full", "sliding:9"])
@pytest.mark.parametrize("phase", ["fwd", "fwd+bwd"])
def test_check_passes_a_correct_ring(mask, phase):
    cfg = _cfg(mask, phase)
    checked = check_outputs(cfg, _ring_results(cfg))
    assert checked["ok"], checked["errors"]


@pytest.mark.parametrize("phase", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("schedule", ["contiguous", "zigzag"])
def test_check_fails_a_sliding_window_one_token_too_wide(monkeypatch, phase, schedule):
    real = Mask.bounds

    def one_too_wide(self, seq_len):  # the bug: keys q - W .. q instead of q - W + 1 .. q
        return (0, self.window) if self.kind == "sliding" else real(self, seq_len)

    monkeypatch.setattr(Mask, "bounds", one_too_wide)
    cfg = _cfg("sliding:9", phase, schedule)
    checked = check_outputs(cfg, _ring_results(cfg))
    assert not checked["ok"]
    bad = {row["tensor"] for row in checked["errors"] if not row["ok_vs_fp64"]}
    assert {"out", "lse"} <= bad
