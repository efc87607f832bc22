"""Errors seqify raises on purpose. Each carries a message meant for a person."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SeqifyError(Exception):
    """Base class: the CLI prints these as one clear message, never a traceback."""


class UnknownComponentError(SeqifyError, KeyError):
    """A name that no plugin registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str], scope: str = ""):
        self.kind, self.name = kind, name
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        where = f" for {scope}" if scope else ""
        msg = f"unknown {kind} {name!r}{where}"
        if close:
            msg += f"; did you mean {' or '.join(repr(c) for c in close)}?"
        msg += f" (known: {', '.join(known) if known else 'none'})"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class RegistrationError(SeqifyError):
    """Two plugins registered the same name, or a registration is malformed."""


class NotApplicableError(SeqifyError):
    """A combination of components that cannot run together; the message says why."""


class ConfigError(SeqifyError):
    """An invalid configuration value; the message names the field."""


class DataError(SeqifyError):
    """Input data that cannot be used at all (a missing file, no valid rows)."""
