"""How the real amd-smi reports failures, and where (reference section 7.4/7.5).

* ``CliError``: a CLI exception raised while a subcommand runs -> stdout, exit 0
  (``{"error": ..., "code": n}`` in --json, ``error,code`` in --csv).
* ``ParseError``: a CLI exception raised while parsing (``-g``, ``-C`` values, sudo checks,
  command not supported) -> stderr ``amdsmi_cli_exceptions.<Name>: <msg> Error code: <n>``, exit 1.
* ``ChainedError``: a library exception turned into a Python exception (ValueError,
  PermissionError) -> stderr chained text, no traceback, exit 1.
* ``UsageError``: argparse error inside a subcommand -> stderr usage + ``amd-smi X: error: ...``, exit 2.
* ``Exit``: plain text to a stream and a status (declined confirmation, injected failures).

From ROCm 7.13 the CLI prints its exceptions to stdout and exits with ``abs(code)``; a
PermissionError becomes ``AmdSmiPermissionDeniedException`` (-11) and a ValueError
``AmdSmiParameterNotSupportedException`` (-8) (``for_rocm_7_13``).
"""

from __future__ import annotations

import json

STATUS = {
    "AMDSMI_STATUS_INVAL": (1, "Invalid parameters"),
    "AMDSMI_STATUS_NOT_SUPPORTED": (2, "Feature not supported"),
    "AMDSMI_STATUS_NO_PERM": (10, "Permission Denied"),
    "AMDSMI_STATUS_BUSY": (30, "Device busy"),
    "AMDSMI_STATUS_DRIVER_NOT_LOADED": (34, "Driver not loaded"),
    "AMDSMI_STATUS_AMDGPU_RESTART_ERR": (54, "AMDGPU restart failed, please check dmsg for errors"),
    "AMDSMI_STATUS_SETTING_UNAVAILABLE": (55, "Setting is not available"),
    "AMDSMI_STATUS_UNKNOWN_ERROR": (4294967295, "An unknown error occurred"),
}

# CLI exception class names by code
CLI_EXCEPTIONS = {
    -1: "AmdSmiInvalidCommandException",
    -2: "AmdSmiInvalidParameterException",
    -3: "AmdSmiDeviceNotFoundException",
    -5: "AmdSmiInvalidParameterValueException",
    -6: "AmdSmiMissingParameterValueException",
    -7: "AmdSmiCommandNotSupportedException",
    -9: "AmdSmiRequiredCommandException",
    -10: "AmdSmiInvalidSubcommandException",
    -11: "AmdSmiPermissionDeniedException",
    -8: "AmdSmiParameterNotSupportedException",
}


class EmulatorExit(Exception):
    """Base: carries what to print and the exit status."""

    stdout: str = ""
    stderr: str = ""
    status: int = 1


class CliError(EmulatorExit):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message, self.code = message, code
        self.status = 0

    def render(self, fmt: str) -> str:
        if fmt == "json":
            return json.dumps({"error": self.message, "code": self.code}) + "\n"
        if fmt == "csv":
            return f"error,code\n{self.message}, {self.code}\n"
        return f"{self.message} Error code: {self.code}\n"


class ParseError(EmulatorExit):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message, self.code = message, code
        self.stderr = f"amdsmi_cli_exceptions.{CLI_EXCEPTIONS[code]}: {message} Error code: {code}\n"
        self.status = 1


def library_exception(status: str) -> str:
    code, desc = STATUS[status]
    return f"amdsmi.amdsmi_exception.AmdSmiLibraryException: Error code:\n\t{code} | {status} - {desc}"


class ChainedError(EmulatorExit):
    def __init__(self, status: str, final: str, stdout: str = "") -> None:
        super().__init__(final)
        self.final = final
        self.stdout = stdout
        self.stderr = (
            f"{library_exception(status)}\n\n"
            "The above exception was the direct cause of the following exception:\n\n"
            f"{final}\n"
        )
        self.status = 1


class UsageError(EmulatorExit):
    def __init__(self, usage: str, prog: str, message: str) -> None:
        super().__init__(message)
        self.stderr = f"{usage}{prog}: error: {message}\n"
        self.status = 2


class Exit(EmulatorExit):
    def __init__(self, status: int, stdout: str = "", stderr: str = "") -> None:
        super().__init__(stderr or stdout)
        self.status, self.stdout, self.stderr = status, stdout, stderr


def for_rocm_7_13(err: EmulatorExit, command: str) -> EmulatorExit:
    """How the 7.13+ CLI reports ``err``: the exception line on stdout, exit ``abs(code)``
    (amdsmi_cli.py ``sys.exit(abs(e.value))``). ``command``: the subcommand word."""
    if isinstance(err, ChainedError):
        if err.final.startswith("PermissionError"):
            err = ParseError(f"AMD-SMI Command '{command}' requires elevation (sudo privileges required)", -11)
        else:
            err = ParseError(f"Parameter '{command}' is not supported on the system. Run '--help' for more info.", -8)
    if isinstance(err, ParseError):
        out = Exit(abs(err.code), stdout=err.stderr)
        return out
    return err
