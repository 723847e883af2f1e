"""Target-sparsity schedules: the band [r_min, r_max] as a pure function of training progress.

The band keeps its final width; its centre moves from ``initial`` (default 0: dense) to the
final centre between fractions ``begin`` and ``end`` of training, with a shape per schedule
(gradual pruning in the style of Zhu & Gupta 2017 for ``agp``). ``constant`` holds the final
band from the first step.
"""

from __future__ import annotations

import math

from adasparse_lab.errors import ConfigError


class BandSchedule:
    """Base: subclasses define ``shape(t)`` rising from 0 at t=0 to 1 at t=1."""

    def __init__(
        self, r_min: float, r_max: float, initial: float = 0.0, begin: float = 0.0, end: float = 0.5
    ) -> None:
        if not 0.0 <= r_min <= r_max < 1.0:
            raise ConfigError(
                f"schedule.r_min={r_min} and schedule.r_max={r_max} must satisfy 0 <= r_min <= r_max < 1"
            )
        if not 0.0 <= begin < end <= 1.0:
            raise ConfigError(
                f"schedule.begin={begin} and schedule.end={end} must satisfy 0 <= begin < end <= 1"
            )
        if not 0.0 <= initial < 1.0:
            raise ConfigError(f"schedule.initial={initial} must be in [0, 1)")
        self.r_min, self.r_max = r_min, r_max
        self.initial, self.begin, self.end = initial, begin, end

    @property
    def centre(self) -> float:
        return (self.r_min + self.r_max) / 2

    def shape(self, t: float) -> float:
        raise NotImplementedError

    def done_at(self) -> float:
        """Progress from which the band is final (early stopping waits for it)."""
        return self.end

    def band(self, progress: float) -> tuple[float, float]:
        t = min(max((progress - self.begin) / (self.end - self.begin), 0.0), 1.0)
        # Shift the final band down by the distance still to go (exactly 0 once final).
        shift = (self.centre - self.initial) * (1.0 - self.shape(t))
        return max(self.r_min - shift, 0.0), self.r_max - shift


class ConstantBand(BandSchedule):
    def shape(self, t: float) -> float:
        return 1.0

    def done_at(self) -> float:
        return 0.0


class LinearBand(BandSchedule):
    def shape(self, t: float) -> float:
        return t


class AGPBand(BandSchedule):
    """Cubic: s_t = s_f + (s_i - s_f) (1 - t)^3 - fast early, gentle near the target."""

    def shape(self, t: float) -> float:
        return 1.0 - (1.0 - t) ** 3


class CosineBand(BandSchedule):
    def shape(self, t: float) -> float:
        return 0.5 * (1.0 - math.cos(math.pi * t))


class StepBand(BandSchedule):
    """``n_steps`` equal jumps of the centre between begin and end."""

    def __init__(
        self,
        r_min: float,
        r_max: float,
        initial: float = 0.0,
        begin: float = 0.0,
        end: float = 0.5,
        n_steps: int = 4,
    ) -> None:
        super().__init__(r_min, r_max, initial, begin, end)
        if n_steps < 1:
            raise ConfigError(f"schedule.n_steps={n_steps} must be >= 1")
        self.n_steps = n_steps

    def shape(self, t: float) -> float:
        return min(math.floor(t * self.n_steps + 1e-9) / self.n_steps, 1.0) if t < 1.0 else 1.0
