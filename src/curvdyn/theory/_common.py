"""Argument checks shared by the theory modules."""

from __future__ import annotations

from curvdyn.rules import Rule, get_rule


def _as_rule(rule) -> Rule:
    if isinstance(rule, str):
        return get_rule(rule)
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be a Rule (from get_rule) or a rule name, got {type(rule).__name__}")
    return rule


def _check_depth(d) -> int:
    if int(d) != d or d < 1:
        raise ValueError(f"depth d must be a positive integer, got {d}")
    return int(d)
