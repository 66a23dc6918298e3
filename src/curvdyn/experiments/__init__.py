"""Reproducible experiments: one module per figure of the paper (see base.py for the protocol)."""
