"""Percentiles, shared by every part of the benchmark."""

import statistics
from dataclasses import dataclass


@dataclass
class Figures:
    """Percentiles of one measurement, in the unit its name says."""

    count: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: list[float]) -> "Figures":
        if not values:
            return cls()
        ordered = sorted(values)

        def at(fraction: float) -> float:
            return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

        return cls(
            count=len(ordered),
            p50=statistics.median(ordered),
            p95=at(0.95),
            p99=at(0.99),
            max=ordered[-1],
        )

    @classmethod
    def from_dict(cls, values: dict) -> "Figures":
        return cls(**values)

    def line(self, name: str, unit: str) -> str:
        if not self.count:
            return f"{name:<32} (no samples)"
        digits = 1 if unit == "ms" else 3
        parts = [
            f"p50 {self.p50:.{digits}f}",
            f"p95 {self.p95:.{digits}f}",
            f"p99 {self.p99:.{digits}f}",
            f"max {self.max:.{digits}f} {unit}",
        ]
        return f"{name:<32} " + "  ".join(parts) + f"  (n={self.count})"
