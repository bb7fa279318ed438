"""Errors about bad input data."""


class InputDataError(ValueError):
    """Raw data is malformed; the message names the file and the line, row or column."""


class SourceNotFoundError(FileNotFoundError):
    """A configured, non-optional source is absent; the message names the expected files."""
