"""portscope: which processes use which ports.

The public API: ``take_snapshot()``, ``sockets()``, ``listeners()``, ``owners_of(port)``, the
data model (``Socket``, ``Endpoint``, ``Owner``, ``ProcessInfo``, ``Snapshot``), ``SocketFilter``
and the errors; ``check_bind()``, ``pick_free_ports()``, ``bind_free_ports()``, ``plan_kill()``,
``free_port()``, ``explain_port()`` and ``explain_pid()`` (the audit is
``portscope.audit.audit()``). Each is imported on first use; importing portscope loads no
terminal or export library.
"""

import importlib

__version__ = "0.1.0"

TYPE_CHECKING = False
if TYPE_CHECKING:            # for type checkers; at run time every name comes from __getattr__
    from .bindcheck import BindDiagnosis, check_bind
    from .errors import (AccessDenied, BackendError, BackendUnavailable, BaselineError,
                         HistoryError, InvalidInput, KillRefused, PidReused, PortscopeError,
                         ProcessGone)
    from .explain import explain_pid, explain_port
    from .filters import SocketFilter
    from .freeport import bind_free_ports, pick_free_ports
    from .kill import free_port, plan_kill
    from .snapshot import listeners, owners_of, sockets, take_snapshot
    from .types import (Container, Endpoint, Family, NetNamespace, Owner, OwnerUnknown, Peer,
                        ProcessInfo, Proto, Snapshot, Socket, State, UnixInfo, UnixType)

#: public names -> the module that defines them, imported on first use: ``import portscope``
#: stays cheap, so the command line can start its fd scan before the rest is loaded
_LAZY = {
    **dict.fromkeys(("AccessDenied", "BackendError", "BackendUnavailable", "BaselineError",
                     "HistoryError", "InvalidInput", "KillRefused", "PidReused",
                     "PortscopeError", "ProcessGone"), "errors"),
    "SocketFilter": "filters",
    **dict.fromkeys(("listeners", "owners_of", "sockets", "take_snapshot"), "snapshot"),
    **dict.fromkeys(("Container", "Endpoint", "Family", "NetNamespace", "Owner",
                     "OwnerUnknown", "Peer", "ProcessInfo", "Proto", "Snapshot", "Socket",
                     "State", "UnixInfo", "UnixType"),
                    "types"),
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


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = sorted(_LAZY)
