"""Argument checks shared by the theory modules."""

from __future__ import annotations

from curvdyn._validate import check_count
from curvdyn.rules import Rule, get_rule


def _as_rule(rule) -> Rule:
    if isinstance(rule, str):
        return get_rule(rule)
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be a Rule (from get_rule) or a rule name, got {type(rule).__name__}")
    return rule


def _check_depth(d) -> int:
    return check_count(d, "depth d")
