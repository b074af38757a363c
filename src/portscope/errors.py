"""The exception tree of portscope. Stdlib only.

Bad arguments raise ``ValueError`` (``InvalidInput`` for parsed user input). A partial view is
data (``Snapshot.complete`` is False), never an exception.
"""

from __future__ import annotations


class PortscopeError(Exception):
    """Base of every error portscope raises on purpose."""


class InvalidInput(PortscopeError, ValueError):
    """A port, address, range or name given by the user is malformed or out of range."""


class BackendError(PortscopeError):
    """A socket source failed (netlink error, unreadable /proc/net file)."""


class BackendUnavailable(BackendError):
    """The requested socket source does not exist on this system or kernel."""


class AccessDenied(PortscopeError):
    """The caller lacks a privilege the operation needs."""


class ProcessGone(PortscopeError):
    """The process exited before it could be acted on."""


class PidReused(ProcessGone):
    """The PID now names a different process (start time or held socket changed)."""


class KillRefused(PortscopeError):
    """A safety rule forbids signalling this process (PID 1, self, ancestor, supervisor)."""


class BaselineError(PortscopeError):
    """An audit baseline file is unreadable, malformed or of another schema version."""


class HistoryError(PortscopeError):
    """The history database is unreadable or corrupt."""
