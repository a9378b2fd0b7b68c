"""Measure the conformance suite's float64 rounding band of delta, and where it comes from.

Draws float64-only cases from the suite's own strategy (``cases()`` with a driver that
offers float64 alone), compares the named adapter with the numpy reference, and prints
the band (``Verdict.band``, degrees) split by whether the case holds an angle of
exactly 0 or 180 degrees (where acos turns a relative error e of the cosine into about
sqrt(2 e) radians) and whether it holds a tensor past 64 elements (a large one).
docs/conformance.md quotes its output. It measures; it asserts nothing.

Usage: ``python benchmarks/conformance_band.py [ADAPTER] [EXAMPLES]`` (default numpy 300).
"""

from __future__ import annotations

import math
import sys

from autodrop_conformance import cases, load_driver
from autodrop_conformance._check import _reference_trace
from autodrop_conformance._compare import compare_to_reference
from autodrop_conformance._replay import replay
from hypothesis import HealthCheck, given, settings


def _quantiles(values: list[float]) -> str:
    if not values:
        return "n=0"
    xs = sorted(values)
    return f"n={len(xs)} median {xs[len(xs) // 2]:.2g} deg, max {xs[-1]:.2g} deg"


def main(adapter: str = "numpy", examples: int = 300) -> None:
    driver = load_driver(adapter)

    class Float64Only:
        name, dtypes, accumulation, max_examples = driver.name, ("float64",), "float64", None
        size_thresholds = (2**16 + 1,)

    rows: list[tuple[float, bool, bool]] = []

    # derandomized: the same cases on every run, so that two versions of an adapter compare case by case
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(cases(Float64Only()))
    def measure(case):  # type: ignore[no-untyped-def]
        ref = _reference_trace(case, False)
        got = replay(lambda values: driver.start(values, case.layout, case.config), None, case)
        verdict = compare_to_reference(driver.name, case, ref, got, "float64")
        angles = [e.decision.angle for e in ref.epochs if e.decision.angle is not None]
        extreme = any(a < 1e-3 or a > 180.0 - 1e-3 for a in angles)
        large = max(math.prod(s) for s in case.layout.shapes) > 64
        if verdict.band > 0:
            rows.append((verdict.band, extreme, large))

    measure()
    print("all cases:                        ", _quantiles([b for b, _, _ in rows]))
    print("an angle at 0/180, small tensors: ", _quantiles([b for b, e, big in rows if e and not big]))
    print("an angle at 0/180, a large tensor:", _quantiles([b for b, e, big in rows if e and big]))
    print("no angle at 0/180:                ", _quantiles([b for b, e, _ in rows if not e]))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "numpy", int(sys.argv[2]) if len(sys.argv) > 2 else 300)
