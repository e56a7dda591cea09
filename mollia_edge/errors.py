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


QUOTE_LIMIT = 40
"""Characters of a user value a message quotes at most."""
LIST_LIMIT = 5
"""User values a message lists at most."""


def _escaped(text: str) -> str:
    """``text`` with every non-printable character (control, invisible, surrogate) as its escape."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def quoted(value: object, limit: int = QUOTE_LIMIT, quote: bool = True) -> str:
    """A user value as a message may quote it: non-printable characters escaped (control,
    invisible and lone surrogate characters visible), cut to ``limit`` characters with "…", in
    single quotes unless ``quote`` is false; other values (numbers) as ``str`` gives them, cut."""
    if not isinstance(value, str):
        text = str(value)
        return text[:limit] + "…" if len(text) > limit else text
    shown = _escaped(value[:limit]) + ("…" if len(value) > limit else "")
    return f"'{shown}'" if quote else shown


def quoted_list(values: object, limit: int = LIST_LIMIT, quote: bool = True) -> str:
    """Up to ``limit`` user values, each :func:`quoted`, then "and N more"."""
    items = list(values)  # type: ignore[call-overload]
    shown = ", ".join(quoted(v, quote=quote) for v in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
