"""Text for a terminal: strings from files we did not write, made harmless to print.

A label, a metadata value (``version``), a config or class name, a path inside an archive can hold escape
sequences (OSC sets the window title, CSI clears the screen or moves the cursor), a carriage return or a newline
(a forged second ``Error:`` line), or bidi overrides that show text in another order than it is. `safe_text`
escapes each such character, so what is printed is what the file holds, one line per line the CLI means.

The CLI renders every line through it (`vitexport.cli.app.echo`, its error and log lines); ``--json`` output is
``json.dumps``'s, which escapes the same characters itself (`safe_text` leaves it unchanged).
"""

from __future__ import annotations

import re

# C0 controls but tab, DEL, C1 controls; bidi embeddings, overrides and isolates, marks; line and paragraph separators
UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\x1b": "\\x1b"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def safe_text(text: str) -> str:
    """``text`` with every control character (but tab) and every bidi control escaped as ``\\n``, ``\\x1b``,
    ``\\u202e``, ...: one line, shown as it is stored. Text without them is returned as it is."""
    return UNSAFE.sub(_escape, text) if UNSAFE.search(text) else text


def safe_lines(text: str) -> str:
    """`safe_text` for each line of a block the CLI prints as several lines (a YAML document): its own newlines
    are kept, everything else is escaped."""
    return "\n".join(safe_text(line) for line in text.split("\n"))


__all__ = ["UNSAFE", "safe_lines", "safe_text"]
