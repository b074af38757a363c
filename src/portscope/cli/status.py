"""``ExitStatus``: the exit codes of the command line, one enum used by every command."""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """What ``portscope`` exits with (DESIGN.md section 5; ``portscope --help`` says it)."""

    OK = 0              #: success; for questions: yes
    NO = 1              #: the answer is no (nothing on that port, not bindable, findings...)
    USAGE = 2           #: usage error (bad port, address, option)
    RUNTIME = 3         #: runtime error (backend failed, history or baseline unreadable)
    ACCESS = 4          #: access denied
    REFUSED = 5         #: refused by a safety rule
    INTERRUPTED = 130   #: interrupted (SIGINT)

    @classmethod
    def answer(cls, yes: bool) -> "ExitStatus":
        """``OK`` for a yes, ``NO`` for a no."""
        return cls.OK if yes else cls.NO
