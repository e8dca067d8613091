"""Calibration: fit the simulator's cost model to measured runs (see :mod:`.fit`)."""
from .fit import DISPERSION_Q, FORMAT, SHARE_MAX_WORLD_SIZE, calibrate, predict_blocks, predict_entry
from .fits import (ModelChoice, PowerFit, RooflineFit, RowsFit, TableFit, fit_line_nonneg, fit_power, fit_roofline,
                   fit_rows, mape)
from .measured import (assign_iterations, block_samples, load_measured, program_for, trace_link_class, trace_load,
                       transfer_samples, workload_from_meta)
from .model import CalibratedCost, load_calibration, write_calibration
from .sharing import block_gaps_s, core_time_s, fluid_program, share_cores, start_skew_s, transfer_core_time_s

__all__ = ["calibrate", "load_calibration", "write_calibration", "CalibratedCost", "load_measured", "block_samples",
           "transfer_samples", "assign_iterations", "core_time_s", "transfer_core_time_s", "block_gaps_s",
           "share_cores", "fluid_program", "start_skew_s", "fit_line_nonneg", "fit_roofline", "fit_power", "fit_rows", "mape",
           "ModelChoice", "RooflineFit", "RowsFit", "PowerFit", "TableFit", "trace_link_class", "trace_load",
           "workload_from_meta", "program_for", "predict_entry", "predict_blocks", "FORMAT", "DISPERSION_Q",
           "SHARE_MAX_WORLD_SIZE"]
