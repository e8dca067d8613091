"""Build step for the optional compiled core of the DES (ringsim/engines/_cdes.c).

Everything else is in pyproject.toml. The extension is optional: where it cannot be built (no C
compiler or Python headers) the install still succeeds and ringsim runs its pure-Python DES, which
computes the same results more slowly (see ringsim/engines/des.py: ``compiled_core``).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("ringsim.engines._cdes", ["ringsim/engines/_cdes.c"], optional=True,
                             extra_compile_args=["-O2"])])
