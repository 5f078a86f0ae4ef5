"""The selection rule of benchmarks/mr_multiprotocol_settings.py, which decides the shipped
multiprotocol model's test-time shifts and kidney threshold (rule: benchmarks/README.md)."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def rule():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("mr_multiprotocol_settings", BENCH / "mr_multiprotocol_settings.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def _scores(rule, philips=0.5, chaos=0.9, **overrides):
    p = {rule.label(*c): philips for c in rule.candidates()}
    c = {rule.label(*k): chaos for k in rule.candidates()}
    for key, (pv, cv) in overrides.items():
        p[key], c[key] = pv, cv
    return p, c


def test_best_philips_wins_only_within_the_chaos_guard(rule):
    p, c = _scores(rule, **{"shift8/0.3": (0.95, 0.85), "shift4/0.4": (0.80, 0.895), "none/argmax": (0.5, 0.9)})
    assert rule.choose(p, c) == "shift4/0.4"  # shift8/0.3 is best on Philips but 0.05 below on CHAOS


def test_ties_go_to_fewer_passes_then_the_higher_threshold(rule):
    p, c = _scores(rule, **{"shift8/0.35": (0.803, 0.9), "none/0.4": (0.800, 0.9), "none/0.45": (0.799, 0.9)})
    assert rule.choose(p, c) == "none/0.45"  # all within 0.005: one pass, then the higher threshold
    p, c = _scores(rule)  # everything equal: the plain pass
    assert rule.choose(p, c) == "none/argmax"


def test_mean_dice_averages_the_two_kidneys_over_their_own_rows(rule):
    rows = [{"dice_kidney_right": 1.0, "dice_kidney_left": 0.0}, {"dice_kidney_right": 0.5}]
    assert rule.mean_dice(rows) == pytest.approx((0.75 + 0.0) / 2)
