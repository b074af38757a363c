"""portscope: which processes use which ports.

The public API: ``take_snapshot()``, ``sockets()``, ``listeners()``, ``owners_of(port)``, the
data model (``Socket``, ``Endpoint``, ``Owner``, ``ProcessInfo``, ``Snapshot``), ``SocketFilter``
and the errors; and, imported on first use, ``check_bind()``, ``pick_free_ports()``,
``bind_free_ports()``, ``plan_kill()``, ``free_port()``, ``explain_port()`` and
``explain_pid()`` (the audit is ``portscope.audit.audit()``). Importing portscope loads no
terminal or export library.
"""

import importlib


from .errors import (AccessDenied, BackendError, BackendUnavailable, BaselineError, HistoryError,
                     InvalidInput, KillRefused, PidReused, PortscopeError, ProcessGone)
from .filters import SocketFilter
from .snapshot import listeners, owners_of, sockets, take_snapshot
from .types import (Container, Endpoint, Family, NetNamespace, Owner, OwnerUnknown, ProcessInfo, Proto,
                    Snapshot, Socket, State)

__version__ = "0.1.0"

#: public functions whose modules are imported only when first used: name -> module
_LAZY = {
    "check_bind": "bindcheck", "BindDiagnosis": "bindcheck",
    "pick_free_ports": "freeport", "bind_free_ports": "freeport",
    "plan_kill": "kill", "free_port": "kill",
    "explain_port": "explain", "explain_pid": "explain",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'portscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value

__all__ = [
    "AccessDenied", "BackendError", "BackendUnavailable", "BaselineError", "Container", "Endpoint", "Family",
    "HistoryError", "InvalidInput", "KillRefused", "NetNamespace", "Owner", "OwnerUnknown",
    "PidReused", "PortscopeError", "ProcessGone", "ProcessInfo", "Proto", "Snapshot", "Socket",
    "SocketFilter", "State", "listeners", "owners_of", "sockets", "take_snapshot", *_LAZY,
]
