"""portscope: which processes use which ports.

The public API: ``take_snapshot()``, ``sockets()``, ``listeners()``, ``owners_of(port)``, the
data model (``Socket``, ``Endpoint``, ``Owner``, ``ProcessInfo``, ``Snapshot``), ``SocketFilter``
and the errors. Importing portscope loads no terminal or export library.
"""

from .errors import (AccessDenied, BackendError, BackendUnavailable, BaselineError, HistoryError,
                     InvalidInput, KillRefused, PidReused, PortscopeError, ProcessGone)
from .filters import SocketFilter
from .snapshot import listeners, owners_of, sockets, take_snapshot
from .types import (Container, Endpoint, Family, NetNamespace, Owner, OwnerUnknown, ProcessInfo, Proto,
                    Snapshot, Socket, State)

__version__ = "0.1.0"

__all__ = [
    "AccessDenied", "BackendError", "BackendUnavailable", "BaselineError", "Container", "Endpoint", "Family",
    "HistoryError", "InvalidInput", "KillRefused", "NetNamespace", "Owner", "OwnerUnknown",
    "PidReused", "PortscopeError", "ProcessGone", "ProcessInfo", "Proto", "Snapshot", "Socket",
    "SocketFilter", "State", "listeners", "owners_of", "sockets", "take_snapshot",
]
