"""Text from data on a terminal: control characters made visible, never obeyed.

A post id or a `--user` holding `ESC ] 0 ; ... BEL` retitles the window, `ESC [ 2 J` clears
the screen: printed raw, data becomes commands to the terminal. Every console the CLI prints
through is a `SafeConsole`, which shows such characters as `\\x1b` while rich's own styling
and cursor control (its control segments) still reach the terminal.
"""
from __future__ import annotations

import re
from typing import Iterable

from rich.console import Console
from rich.segment import Segment

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 (not tab, newline), DEL, C1


def visible(text: str) -> str:
    """`text` with every control character but tab and newline written as `\\xNN`."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class SafeConsole(Console):
    """A rich Console whose printed text never carries a control character from the data."""

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(s if s.control else Segment(visible(s.text), s.style) for s in buffer)
