"""User-facing errors: one line naming the file, the field and the fix."""

from __future__ import annotations


class FlywheelError(Exception):
    """An error the user can fix. The CLI prints `str(err)` alone and exits non-zero."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 fix: str | None = None) -> None:
        self.file, self.field, self.fix, self.detail = file, field, fix, message
        where = ": ".join(p for p in (file, field) if p)
        text = f"{where}: {message}" if where else message
        if fix:
            text = f"{text} Fix: {fix}"
        super().__init__(" ".join(text.split()))  # always one line


class ConfigError(FlywheelError):
    """A recipe (YAML config) is malformed."""


class InputDataError(FlywheelError):
    """A prompt file or dataset is malformed."""


class WorkspaceError(FlywheelError):
    """The workspace is missing, locked, or not in the state the command needs."""


class WorkspaceBusyError(WorkspaceError):
    """Another run holds the workspace lock."""

    exit_code = 3


class GateFailedError(FlywheelError):
    """The data gate blocked training; the iteration is recorded as failed and the parent kept."""

    exit_code = 4


class ReproduceMismatchError(FlywheelError):
    """A reproduced artifact differs from its recorded hash, or could not be fetched."""

    exit_code = 1
