"""One error family for the whole tool.

Library code raises these with a message that names the file or URL and says what to do; the CLI turns
them into a one-paragraph message and an exit code instead of a traceback (``--debug`` shows it).
"""

from __future__ import annotations


class FacecurateError(Exception):
    """Base of every error the CLI reports as a message rather than a traceback."""

    exit_code = 1


class WorkspaceError(FacecurateError):
    """No workspace where one was expected, or a broken facecurate.toml."""


class ConfigError(FacecurateError):
    """A facecurate.toml value has the wrong type or range."""


class CatalogError(FacecurateError):
    """The catalog cannot be opened or migrated."""


class ExportError(FacecurateError):
    """An export would overwrite or delete files facecurate did not write."""


class DeviceError(FacecurateError):
    """The requested compute device is not available to torch."""


class ImageError(FacecurateError):
    """An image cannot be decoded safely; ``reason`` is a short code stored in the catalog."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotAvailableError(FacecurateError):
    """A command of the design surface that a later release fills in."""

    exit_code = 2


class PipelineError(FacecurateError):
    """A stage of ``run`` failed or was blocked; it keeps that stage's exit code (3 for a blocked search)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
