"""The package version (one place, read by `lrpfn.__version__` and store provenance)."""

__version__ = "0.1.0"
