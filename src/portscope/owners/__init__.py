"""Who holds which socket, and who those holders are.

Parts: ``fdscan`` (one pass over every process's descriptors: ``start_scan``, the ``/proc/*/fd``
scan with forked workers, ``OwnerIndex``), ``bpf`` (the same pass by BPF iterators, inside
the kernel), ``process`` (process details from ``/proc/PID/...``).

Import the part you need: this package imports none of them, so that the command line can
start the BPF scan (``bpf.prefetch``) before the rest of portscope is loaded.
"""
