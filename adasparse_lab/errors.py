"""Errors raised for bad user input, with messages that name the problem."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key."""


class DataError(ValueError):
    """Input data is missing or malformed; the message names the column or file."""


class StoreError(RuntimeError):
    """Stored state (a tracking or study store) is damaged; the message names the file and
    what to do about it."""
