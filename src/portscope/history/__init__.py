"""portscope's time axis: the change stream (``diff.py``), its sources, the store and queries.

``portscope.history.diff`` turns consecutive snapshots into events (opened, closed,
owners-changed, state-changed); ``watch``, the recorder, the TUI and the exporter all read it.
"""
