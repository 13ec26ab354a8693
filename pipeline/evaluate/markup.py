"""The HTML pieces every page of `pipe report`, `pipe explain` and `pipe rank` is made of:
inline PNG images, notes said in place of a plot, and small tables (all text escaped)."""
from __future__ import annotations

import base64
import html
from typing import Sequence


def img(png: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" alt="{html.escape(alt)}">'


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def table(head: Sequence[str], rows: Sequence[Sequence[object]], caption: str = "", left: int = 1,
          cls: str = "") -> str:
    """A plain table: the first `left` columns left-aligned (ids), the others right-aligned;
    floats with 4 decimals."""
    def cell(i: int, v: object, tag: str = "td") -> str:
        text = f"{v:.4f}" if isinstance(v, float) else "—" if v is None else str(v)
        return f'<{tag}{" class=l" if i < left else ""}>{html.escape(text)}</{tag}>'

    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (f'<table class="{cls}">{cap}<thead><tr>' + "".join(cell(i, h, "th") for i, h in enumerate(head))
            + "</tr></thead><tbody>" + "".join("<tr>" + "".join(cell(i, v) for i, v in enumerate(r)) + "</tr>"
                                               for r in rows) + "</tbody></table>")
