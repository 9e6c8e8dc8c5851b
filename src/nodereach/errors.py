"""Errors a user may see: each says what happened and what to do next, and maps to an exit code."""

from __future__ import annotations


class NodereachError(Exception):
    """Base for errors shown to a user as one line (never a traceback)."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(NodereachError):
    """Bad command-line input."""


class EnvironmentProblem(NodereachError):
    """Something the machine lacks: root, a binary, a kernel feature."""
