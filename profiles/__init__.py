"""Kernel profiles (YAML), shipped as package data so ``load_profile(NAME)`` works from a wheel.

``make_profiles.py`` rebuilds them from the published kernel tables; see its docstring for what
each profile measured and what it derived."""
