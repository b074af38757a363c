"""Text from processes (names, command lines, paths) made safe to show and to store.

Two hazards, one place each:

- **Undecodable bytes.** Linux paths are bytes; Python decodes the ones that are not UTF-8
  with ``surrogateescape``, keeping byte 0xFF as the lone surrogate U+DCFF. A lone surrogate
  is not text: strict JSON parsers reject ``"\\udcff"`` and a UTF-8 terminal cannot print it.
  ``undecodable_escaped()`` writes such a byte as the four characters ``\\xff``, the same way
  in JSON, SARIF, tables, text and CSV.
- **Characters that act instead of showing** (for terminals, tables, CSV and plain text):
  C0 and C1 controls (ESC sequences, newlines), bidirectional controls (U+202A-202E,
  U+2066-2069: "Trojan Source" reordering), other format characters (Unicode category Cf:
  zero-width spaces and joiners, U+FEFF, tags), line and paragraph separators, unassigned
  code points and the other default-ignorable code points (variation selectors, Hangul
  fillers). ``safe()`` shows each as ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``.
"""

from __future__ import annotations

import re
import unicodedata

_SURROGATE = re.compile("[\ud800-\udfff]")
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: categories shown escaped: controls, format characters, surrogates, line and paragraph
#: separators, unassigned code points
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp", "Cn"})
#: default-ignorable code points (Unicode DerivedCoreProperties) outside those categories:
#: combining grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian variation
#: selectors, variation selectors
_IGNORABLE = re.compile("[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f"
                        "\uffa0\U000e0100-\U000e01ef]")


def _surrogate(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def undecodable_escaped(text: str) -> str:
    """``text`` with every lone surrogate replaced: a byte that ``surrogateescape`` kept
    (U+DC80-U+DCFF) as ``\\xNN`` (its value), any other as ``\\uNNNN``. The result encodes
    to UTF-8 (strict JSON, SARIF, terminals). Other text is returned as is."""
    if text.isascii():
        return text
    return _SURROGATE.sub(_surrogate, text)


def _shown(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"            # an undecodable byte
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def safe(text: str) -> str:
    """``text`` for a terminal, table, CSV cell or plain text line: controls, bidirectional
    and other format characters, separators, unassigned and default-ignorable code points,
    and undecodable bytes shown as ``\\xNN`` / ``\\uNNNN`` escapes; everything else as is."""
    if text.isascii():
        return _ASCII_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return "".join(_shown(ch) if unicodedata.category(ch) in _HIDDEN_CATEGORIES
                   or _IGNORABLE.match(ch) else ch for ch in text)
