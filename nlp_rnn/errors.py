"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """Base class for errors caused by the user's input (config, data, arguments)."""


class ConfigError(UserError):
    """A pipeline config is invalid: names the file, the key path and what is allowed."""

    def __init__(self, message: str, file: str | None = None, key: str | None = None,
                 line: int | None = None):
        self.file, self.key, self.line, self.message = file, key, line, message
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        if key:
            where += f"{key}: "
        super().__init__(where + message)


class DataError(UserError):
    """A data file is malformed: names the file and the 1-based line."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        self.file, self.line, self.message = file, line, message
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        super().__init__(where + message)


class ExportError(UserError):
    """An export folder cannot be used (missing, no complete version, damaged metadata or
    SavedModel, a signature it lacks): names the folder, what is wrong and what to do."""

    def __init__(self, folder, problem: str, remedy: str = ""):
        self.folder, self.problem, self.remedy = folder, problem, remedy
        super().__init__(f"{folder}: {problem}" + (f"; {remedy}" if remedy else ""))


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (at most ``limit`` characters), or
    its type's name when the message is empty: the part of a library's multi-line error (a
    TensorFlow OpError, an SQLAlchemy error) that fits in a one-line report."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__
