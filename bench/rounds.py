"""One table from repeated runs of a benchmark: every figure is the median of its rounds.

A benchmark's rows are text (`Row.value` such as "64.88 / 114.6 / 174.84"). Rows of different
rounds are matched by their wording with the numbers left out, in order; the numbers at the same
place in each round's text are replaced by their median. A row whose wording differs between
rounds (a saturation curve that stopped at another step) shows each round's text instead. A
goal counts as met when most rounds met it: for a figure held to one threshold that is the same
as its median meeting it, and the table says in how many rounds it was met.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

from bench.common import Row, median

NUMBER = re.compile(r"(?<![\w.,])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w.]|,\d)")


def skeleton(text: str) -> str:
    return NUMBER.sub("#", text)


def _median(col: Sequence[str]) -> str:
    """The median of one place's numbers, written as they were (decimals, thousands commas)."""
    values = [float(n.replace(",", "")) for n in col]
    x = median(values)
    if x in values:  # an odd number of rounds: one round's own text
        return col[values.index(x)]
    decimals = max(len(n.partition(".")[2]) for n in col) or (0 if x == int(x) else 1)
    grouping = "," if any("," in n for n in col) else ""
    return f"{x:{grouping}.{decimals}f}"


def median_text(texts: Sequence[str]) -> str:
    """`texts` share one skeleton: each number becomes the median of its place."""
    columns = list(zip(*(NUMBER.findall(t) for t in texts), strict=True))
    medians = iter(_median(col) for col in columns)
    return NUMBER.sub(lambda _: next(medians), texts[0])


def _merge_one(found: list[tuple[int, Row]], n: int) -> Row:
    """`found`: (round number, row) for each round that has this figure, of `n` rounds."""
    rows = [row for _, row in found]
    first = rows[0]
    figures, values = [r.figure for r in rows], [r.value for r in rows]
    value = (
        median_text(values)
        if len({skeleton(v) for v in values}) == 1
        else " | ".join(f"round {k}: {row.value}" for k, row in found)
    )
    if len(rows) < n:
        value += f" ({len(rows)} of {n} rounds)"
    verdicts = [r.met for r in rows if r.met is not None]
    met = None if not verdicts else sum(verdicts) * 2 > n
    return Row(
        first.benchmark,
        median_text(figures),
        value,
        first.target,
        met,
        f"{sum(verdicts)}/{n}" if verdicts and n > 1 else "",
    )


def _keyed(rows: Sequence[Row]) -> list[tuple[tuple[str, str, int], Row]]:
    """Each row keyed by its benchmark, its wording without numbers, and which of that wording."""
    seen: dict[tuple[str, str], int] = defaultdict(int)
    out = []
    for row in rows:
        base = (row.benchmark, skeleton(row.figure))
        out.append(((*base, seen[base]), row))
        seen[base] += 1
    return out


def merge(rounds: Sequence[Sequence[Row]]) -> list[Row]:
    """One row per figure, in the order of the round with the most rows, then any others."""
    if len(rounds) == 1:
        return list(rounds[0])
    keyed = [_keyed(rows) for rows in rounds]
    order: dict[tuple[str, str, int], None] = {}
    for rows in sorted(keyed, key=len, reverse=True):
        order.update((key, None) for key, _ in rows)
    matched: dict[tuple[str, str, int], list[tuple[int, Row]]] = defaultdict(list)
    for k, rows in enumerate(keyed, 1):
        for key, row in rows:
            matched[key].append((k, row))
    return [_merge_one(matched[k], len(rounds)) for k in order]
