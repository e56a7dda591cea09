"""User-facing errors: each carries one line that says what is wrong and what to do."""


class MolliaError(Exception):
    """An error the command line reports as one line and a non-zero exit, never a traceback."""

    exit_code = 2


class ConfigError(MolliaError):
    """A setting is out of range or a configuration file is unreadable."""


class ModelError(MolliaError):
    """A model file is missing, truncated, corrupt, or does not match its recorded hash."""


class DataError(MolliaError):
    """Input data is missing, empty, badly encoded, or lacks a required column or label."""


class StoreError(MolliaError):
    """The session store cannot be opened or was written by a newer version."""
