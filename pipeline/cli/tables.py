"""Terminal tables that fit the width without cutting anything.

rich shrinks columns that do not fit and ends them with an ellipsis: `0.7…`, `dma…`,
`vgg16-pool5-128-f…` (the very id a user must pass to `--visual`). Here widths are decided
before rich sees them: a number column is exactly as wide as its widest value (never
wrapped, never cut); id columns share what is left and fold long ids over lines (every
character kept); and when the numbers alone leave id columns too narrow, they continue in
a further table keyed by the first id column. Piped output is one line per row, as before
(the results console is then unbounded).
"""
from __future__ import annotations

from typing import Sequence

from rich.table import Table

BORDER = 3  # a column's padding (one space each side) and its left rule
MIN_ID = 8  # an id column narrower than this folds too often to read: move numbers to a further table


def _width(header: str, cells: Sequence[str]) -> int:
    return max([len(header), *(max(map(len, c.splitlines() or [""])) for c in cells)])


def _id_widths(wanted: list[int], room: int) -> list[int] | None:
    """Widths of the id columns within `room` characters (their own width when they all fit,
    else MIN_ID each and the rest shared: the first column, the id a user types, served first,
    then the narrowest), None when even MIN_ID each does not fit."""
    floor = [min(w, MIN_ID) for w in wanted]
    if sum(floor) > room:
        return None
    out = list(floor)
    left = room - sum(floor)
    order = [0, *sorted(range(1, len(wanted)), key=lambda i: wanted[i])]  # the run id first, then the narrowest
    for k, i in enumerate(order):
        add = min(wanted[i] - out[i], left // (len(order) - k))
        out[i] += add
        left -= add
    return out


def fitted_tables(title: str, ids: list[str], numbers: list[str], rows: list[tuple[list[str], list[str]]],
                  width: int) -> list[Table]:
    """One table (or, on a narrow terminal, the same rows over several) of id columns and
    number columns, at most `width` characters wide. The first table holds every id column
    at its full width and as many number columns as then fit (none, the ids folded, when the
    ids alone do not fit); each further table repeats the first id column with the next numbers."""
    id_w = [_width(h, [r[0][i] for r in rows]) for i, h in enumerate(ids)]
    num_w = [_width(h, [r[1][j] for r in rows]) for j, h in enumerate(numbers)]
    tables: list[Table] = []
    j, first = 0, True
    while first or j < len(numbers):
        keys = list(range(len(ids))) if first else [0]
        wanted = [id_w[i] for i in keys] if first else [min(id_w[0], max(MIN_ID, width // 3))]
        room = width - 1 - BORDER * len(keys)
        take = 0
        while j + take < len(numbers) and sum(wanted) + sum(num_w[j:j + take + 1]) + BORDER * (take + 1) <= room:
            take += 1
        if take == 0 and not first:  # one number column even on a terminal too narrow for it
            take = 1
        widths = _id_widths(wanted, room - sum(num_w[j:j + take]) - BORDER * take) or [min(w, MIN_ID) for w in wanted]
        t = Table(title=title if first else f"{title} (continued)", expand=False)
        for i, w in zip(keys, widths):
            t.add_column(ids[i], width=w, overflow="fold")
        for c in range(j, j + take):
            t.add_column(numbers[c], width=num_w[c], no_wrap=True, justify="right")
        for id_cells, num_cells in rows:
            t.add_row(*[id_cells[i] for i in keys], *num_cells[j:j + take])
        tables.append(t)
        j, first = j + take, False
    return tables
