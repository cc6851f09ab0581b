"""The report's error."""

from __future__ import annotations

from ..errors import LRPError

__all__ = ["ReportError"]


class ReportError(LRPError, ValueError):
    """A store the report cannot read, or an output folder it must not write into."""
