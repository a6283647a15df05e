"""Typed errors of the hardware layer. Each carries the command and the tool's own text."""

from __future__ import annotations


class BackendError(Exception):
    """A hardware tool failed. ``command`` is the argv run, ``output`` the tool's text."""

    code = "backend_error"

    def __init__(self, message: str, *, command: list[str] | None = None, output: str = "",
                 exit_status: int | None = None) -> None:
        self.message = message
        self.command = list(command or [])
        self.output = output
        self.exit_status = exit_status
        super().__init__(message)

    def __str__(self) -> str:
        where = f" (command: {' '.join(self.command)})" if self.command else ""
        return f"{self.message}{where}"


class ToolMissing(BackendError):
    code = "tool_missing"


class BackendTimeout(BackendError):
    code = "timeout"


class BackendUnavailable(BackendError):
    """Transient: driver reloading / not loaded; worth retrying later."""

    code = "unavailable"


class PermissionDenied(BackendError):
    code = "permission_denied"


class MissingGroups(PermissionDenied):
    """amd-smi runs as a user outside the render and video groups (the fix is an operator's)."""

    code = "missing_groups"
    hint = "add the user to the render and video groups (usermod -aG render,video USER)"


class DeviceBusy(BackendError):
    code = "device_busy"


class SettingUnavailable(BackendError):
    """The mode is incompatible with the current memory (NPS) mode."""

    code = "setting_unavailable"


class InvalidValue(BackendError):
    code = "invalid_value"


class NotSupported(BackendError):
    code = "not_supported"


class DriverReloadFailed(BackendError):
    code = "driver_reload_failed"


class DeviceNotFound(BackendError):
    code = "device_not_found"


class ConfirmationDeclined(BackendError):
    """``Confirmation not given. Exiting without setting value`` (the [Y/N] prompt got no yes)."""

    code = "confirmation_declined"


class ParseError(BackendError):
    """Output that does not have the shape any supported version prints."""

    code = "parse_error"


class VerificationFailed(BackendError):
    """A change was reported (or not) but reading the state back shows it did not happen."""

    code = "verification_failed"
