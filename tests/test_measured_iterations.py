"""Assigning measured rows to timed iterations when a step records several rows of one kind (an
all-to-all's send per peer, several kernel calls in one step)."""
import pandas as pd

from ringsim.calibration.measured import assign_iterations
from ringsim.timeline import Timeline


def test_rows_of_one_kind_per_step_stay_in_their_iteration():
    rows = []
    for it in range(3):
        t0 = 10.0 * it
        rows.append((0, 0, "fwd", "wait", t0, t0 + 1, -1, 0, 0, 0))
        for peer in (1, 2, 3):  # an all-to-all: three sends at one step
            rows.append((0, 0, "fwd", "send", t0 + 0.1 * peer, t0 + 1, peer, 8, 0, 0))
        for c in range(2):  # two kernel calls at the next step
            rows.append((0, 1, "fwd", "compute", t0 + 2 + c, t0 + 3 + c, -1, 0, 10, 40))
    df = Timeline.from_records(rows).df
    it = assign_iterations(df)
    assert it.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    # one row per key per iteration: the k-th occurrence is iteration k, as before
    single = df[df["kind"] == "wait"]
    assert assign_iterations(single).tolist() == [0, 1, 2]
    assert isinstance(it, pd.Series)
