"""What may be printed: medians and interquartile ranges over interleaved rounds, and comparisons that
keep a value only when the effect is larger than its spread and than the control's difference."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Summary:
    """A figure over the rounds: median, interquartile range, and every run."""

    median: float
    spread: float
    runs: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(statistics.median(values), iqr(values), tuple(values))

    def as_json(self, digits: int = 1) -> dict[str, Any]:
        return {"median": round(self.median, digits), "spread": json_number(self.spread, digits),
                "runs": [round(v, digits) for v in self.runs]}


def iqr(values: Sequence[float]) -> float:
    if len(values) < 2:
        return math.inf
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q3 - q1


@dataclass(frozen=True)
class Comparison:
    """Variant a against variant b, round by round (the rounds are interleaved, so pairing the
    runs of one round cancels the machine's slow drifts). `effect` is the median of the per-round
    differences (or ratios), `spread` their interquartile range. `floor` is what the same figure
    comes to between two identical listeners in two Envoys (the control against none: |effect| +
    spread), the difference this method reports when there is none. `value` is set only when the
    effect is larger than both, and only when it is a cost: a chain is never reported as free or
    as making requests cheaper."""

    effect: float
    spread: float
    value: float | None
    reason: str  # why value is None (one of REASONS), else ""
    floor: float | None = None

    def as_json(self, digits: int = 1) -> dict[str, Any]:
        return {"value": json_number(self.value, digits), "effect": json_number(self.effect, digits),
                "spread": json_number(self.spread, digits), "floor": json_number(self.floor, digits),
                "resolved": self.value is not None, **({"reason": self.reason} if self.reason else {})}


def json_number(value: float | None, digits: int) -> float | None:
    """JSON has no NaN or infinity: an undefined figure is null."""
    return None if value is None or not math.isfinite(value) else round(value, digits)


Pair = tuple[Sequence[float], Sequence[float]]


def compare_difference(a: Sequence[float], b: Sequence[float], control: Pair | None = None) -> Comparison:
    """What a costs over b, in b's unit: the median of the per-round differences a - b. `control`
    is (control, none) for the same figure: its own difference is the floor."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    effect = statistics.median(diffs)
    floor = None
    if control is not None:
        same = [x - y for x, y in zip(*control, strict=True)]
        floor = abs(statistics.median(same)) + iqr(same)
    return _judge(effect, iqr(diffs), effect, floor)


def compare_ratio(a: Sequence[float], b: Sequence[float], control: Pair | None = None) -> Comparison:
    """a/b per round, for throughput: the cost is the share lost, 1 - a/b; a ratio above 1 would be
    the chain making the proxy faster and is refused like a negative cost."""
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    median = statistics.median(ratios)
    floor = None
    if control is not None:
        same = [x / y for x, y in zip(*control, strict=True)]
        floor = abs(1.0 - statistics.median(same)) + iqr(same)
    return _judge(1.0 - median, iqr(ratios), median, floor)


# Why a comparison has no value, as the JSON says it (stable words) and the text explains it.
REASONS = {
    "noise": "the spread or the control's difference is not smaller than the effect",
    "negative": "measured as cheaper than what it is compared with: noise, not a figure",
    "unresolved": "needs both costs resolved",
}


def _judge(effect: float, spread: float, shown: float, floor: float | None = None) -> Comparison:
    bar = spread if floor is None else max(spread, floor)
    if not abs(effect) > bar:
        return Comparison(effect, spread, None, "noise", floor)
    if effect <= 0:
        return Comparison(effect, spread, None, "negative", floor)
    return Comparison(effect, spread, shown, "", floor)


def ratio_of_effects(a: Comparison, b: Comparison) -> Comparison:
    """How many times b's cost a's cost is (the Wasm chain against the native filter): defined only
    when both costs are resolved."""
    if a.value is None or b.value is None or b.effect <= 0:
        return Comparison(math.nan, math.nan, None, "unresolved")
    ratio = a.effect / b.effect
    return Comparison(ratio, math.nan, ratio, "")
