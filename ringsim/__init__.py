"""ringsim: simulate, measure and compare ring-attention (context-parallel) schedules.

The library (no click here): workload, schedules (the plan), topology, network, engine, costs,
runtime (torch, optional), timeline, calibrate, report. See DESIGN.md for the contracts.
"""
__version__ = "0.1.0"
