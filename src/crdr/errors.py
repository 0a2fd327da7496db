"""Exceptions raised for bad input.

Every user-facing failure (a corrupt file, an unsupported image, missing weights, an out-of-range
quality) is a subclass of :class:`CrdrError`, so the CLI can print one line and exit non-zero while
programming errors still surface as tracebacks.
"""


class CrdrError(Exception):
    """Base class of every error crdr raises on bad input."""


class FormatError(CrdrError):
    """A compressed file is truncated, corrupt, hostile or of an unknown kind."""


class ModelMismatchError(CrdrError):
    """A file was written by a different model than the one asked to decode it."""


class WeightsError(CrdrError):
    """Weights are missing, unreadable, or do not match the architecture."""


class ImageError(CrdrError):
    """An input image cannot be read or has an unsupported mode or size."""


class ParameterError(CrdrError, ValueError):
    """A parameter such as ``q`` or ``beta`` is outside its valid range."""


class OutputExistsError(CrdrError):
    """An output file exists and ``--force`` was not given."""


class ResourceError(CrdrError):
    """The machine lacks the memory for the requested work (an allocation failed)."""
