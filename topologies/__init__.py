"""Topology presets (YAML), shipped as package data so ``--topology NAME`` works from a wheel."""
