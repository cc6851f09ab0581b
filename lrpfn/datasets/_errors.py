"""The errors of `lrpfn.datasets` (all `lrpfn.errors.LRPError`)."""

from __future__ import annotations

from ..errors import LRPError

__all__ = ["DatasetError", "StoreMismatchError"]


class StoreMismatchError(LRPError, ValueError):
    """The output store was written with other settings (model, rules, sizes, versions)
    or is not an lrpfn store: resuming into it would mix two runs."""


class DatasetError(LRPError, ValueError):
    """The data set or an option of the run cannot be explained as asked (empty data set,
    no readable sample, a value that does not fit the store's type)."""
