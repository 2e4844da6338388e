"""Device-controlled text made safe to show: in EAR reasons, logs and the terminal. Pure.

Model names, file paths, versions, board names and certificate names come from the device or
its certificate. Before such text goes into a reason line, a log record or a terminal, every
character that is not printable (control characters, line and paragraph separators, format
characters such as bidirectional overrides) is written as a Python-style escape (``\\n``,
``\\x1b``, ``\\u202e``), and the text is cut to a bound, so a newline in a model name cannot
forge an extra reason line and an escape sequence cannot repaint the operator's terminal.
"""

from __future__ import annotations

MAX_SHOWN = 80


def safe(text: object, limit: int = MAX_SHOWN) -> str:
    """``text`` with every unprintable character escaped, at most ``limit`` characters shown."""
    s = text if isinstance(text, str) else str(text)
    cut = len(s) > limit
    out = []
    for ch in s[:limit]:
        if ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out) + ("..." if cut else "")
