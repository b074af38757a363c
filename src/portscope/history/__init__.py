"""portscope's time axis: the change stream (``diff.py``), its sources, the store and queries.

``portscope.history.diff`` turns consecutive snapshots into events (opened, closed,
owners-changed, state-changed); ``watch``, the recorder, the TUI and the exporter all read it.

The store's API: ``portscope.history.open(path)`` returns a ``History`` whose queries
(``holdings``, ``at``, ``events``) give typed records (``Holding``, ``StoredEvent``).
"""


def open(path=None):  # noqa: A001 - the documented name: portscope.history.open(path)
    """Open a history database for reading (``store.open``): a ``History``.

    Raises:
        HistoryError: missing, not portscope's, corrupt, or of a newer schema.
    """
    from . import store
    return store.open(path)
