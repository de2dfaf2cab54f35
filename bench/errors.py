"""Errors a user can act on.

Every exception here carries a single line that names the offending file, field or name
and says what to do. The CLI prints that line and exits with status 2; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user (flags, files, configs, names): exit code 2, one line."""

    exit_code = 2


class UnknownNameError(UsageError, KeyError):
    """A registry lookup for a name that is not registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class AssetMissingError(UsageError):
    """An offline asset is not installed; the message carries the install command."""


class ResultExistsError(UsageError):
    """Refusal to overwrite an existing result file silently."""


class SchemaError(UsageError):
    """A result record (or config) does not match its schema."""
