"""Exceptions raised by the built-in engine."""

from __future__ import annotations


class EngineError(Exception):
    """Report a processing failure with a message fit to show to the user."""


class EngineCancelled(EngineError):
    """Signal that the progress callback asked to stop."""


class ParamsError(EngineError, ValueError):
    """Report invalid processing parameters, one message per offending key."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = dict(errors)
        details = "; ".join(f"{key}: {message}" for key, message in self.errors.items())
        super().__init__(f"Invalid parameters: {details}")
