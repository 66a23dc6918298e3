"""Shared test setup: float64 everywhere, and the independent reference importable as ``reference``."""

import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
