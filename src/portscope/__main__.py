"""``python -m portscope``."""

from .cli import run

run()
