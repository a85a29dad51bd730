"""Time a call: wall clock, CPU of this process and its children, peak RSS of the tree."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import TypeVar

from .memory import TreeSampler

T = TypeVar("T")


@dataclasses.dataclass
class Measurement:
    """What one timed call cost."""

    wall_s: float
    cpu_s: float  # user + system, this process and every child it waited for
    peak_rss_mb: float  # largest simultaneous RSS of this process and its descendants
    python_rss_mb: float  # this process's own largest RSS during the call
    largest_child_mb: float  # the largest single child (an ffmpeg) during the call

    def as_dict(self) -> dict[str, float]:
        """Return the figures rounded for the report."""
        return {key: round(value, 3) for key, value in dataclasses.asdict(self).items()}


def _cpu_seconds() -> float:
    """Return CPU used so far by this process and its reaped children."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def timed(call: Callable[[], T]) -> tuple[T, Measurement]:
    """Run call and return its result with what it cost."""
    with TreeSampler() as sampler:
        cpu_before = _cpu_seconds()
        start = time.perf_counter()
        result = call()
        wall = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu_before
    return result, Measurement(
        wall_s=wall,
        cpu_s=cpu,
        peak_rss_mb=sampler.peak_mb,
        python_rss_mb=sampler.root_mb,
        largest_child_mb=sampler.largest_child_mb,
    )
