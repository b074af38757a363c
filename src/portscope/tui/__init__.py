"""``portscope tui``: a TCPView-like terminal UI on Textual (an optional extra,
``pip install 'portscope[tui]'``).

``model``, ``detail`` and ``source`` need no Textual; ``app`` and ``table`` do, and are
imported only when the UI starts. Nothing outside this package imports it (``import
portscope`` never loads Textual).
"""
