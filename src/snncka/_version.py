"""The package version (one place: the package, its results' environment record)."""

__version__ = "0.1.0"
