"""The provider interface and its one error type."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from media_jobs.models import Job

# progress(percent 0-100, stage) -> False to stop the work (the job was cancelled).
ProgressFn = Callable[[int, str], bool]


class ProviderError(Exception):
    """A provider refused or failed; permanent errors fail the job at once, others retry."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.message = message
        self.permanent = permanent


class JobCancelled(Exception):
    """The job was cancelled while a provider worked on it."""


@dataclass
class Output:
    """A result file on local disk, ready to be copied into storage."""

    format: str
    filename: str
    path: Path
    size: int
    checksum: str
    statistics: dict[str, Any] = field(default_factory=dict)
    kind: str = "media"  # or "report": an analysis artifact such as the waveform image


@dataclass
class RunResult:
    outputs: list[Output]
    statistics: dict[str, Any]


class Provider:
    """What every provider implements; inline providers do the work inside the worker."""

    kind: str = ""
    label: str = ""
    auth_kind: str | None = None
    # Inline providers run to completion in `run`; remote ones submit, then are polled.
    inline: bool = False

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Return normalised parameters or raise ValueError naming what is wrong."""
        return params

    def run(self, job: Job, *, input_path: Path, workdir: Path, progress: ProgressFn) -> RunResult:
        """Process the job's input to finished outputs (inline providers only)."""
        raise NotImplementedError
