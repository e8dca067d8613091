"""Measured ring attention with torch.distributed (optional extra ``ringsim[torch]``).

The measured half of ringsim: real ring-attention runs whose every rank, step, transfer, wait and
merge is recorded in the simulator's timeline schema, so a prediction and a measurement compare
step by step. Importing this package does not import torch; its modules do.

- :mod:`.kernels` — block classification from the plan's token positions (full / causal / masked /
  empty, trimmed to the rows and columns with allowed pairs), fused and plain-torch block forward
  and backward returning the log-sum-exp, the stable lse merge, an fp64 reference.
- :mod:`.comm` — the ring communicator: one batched isend/irecv per step (``send_recv``,
  ``commit``, ``wait``), byte counters, send/recv/wait intervals.
- :mod:`.ring` — the forward ring, the backward ring (dK/dV travel with the KV shard) and the
  autograd Function :func:`~.ring.ring_attention`.
- :mod:`.instrument` — per-rank recorders (perf_counter on CPU, CUDA events on GPU) and the
  common time origin across ranks.
- :mod:`.runner` — a run's configuration, the per-rank body, assembly into a Timeline, ``--check``.
- :mod:`.launch` — N local gloo ranks with a watchdog, or one rank under ``torchrun`` (NCCL on GPU).
- :mod:`.conformance`, :mod:`.bench` — many configurations in one process group (tests), and the
  instrumentation-overhead benchmark.

The partition and the shard each rank holds at each step come from :class:`ringsim.schedules.Plan`,
the same code the simulator uses; every block's exact pair count is checked against ``plan.pairs``.
"""
