"""`python -m bench.compare BEFORE_DIR [AFTER_DIR]`: the result rows of two full runs side by side
(markdown), matched by benchmark and figure; AFTER_DIR defaults to bench/results. To compare a
commit with today's code, run `make bench` in a worktree of that commit and pass its
bench/results folder."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from bench.common import results_dir
from bench.run import NAMES


def rows_of(folder: Path) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for name in NAMES:
        path = folder / f"{name}.rows.json"
        if path.exists():
            for r in orjson.loads(path.read_bytes())["rows"]:
                out[(r["benchmark"], r["figure"])] = r["value"]
    return out


def compare(before: Path, after: Path) -> str:
    old, new = rows_of(before), rows_of(after)
    keys = list(new) + [k for k in old if k not in new]
    lines = ["| benchmark | figure | before | after |", "|---|---|---|---|"]
    for bench, figure in sorted(keys, key=lambda k: NAMES.index(k[0])):
        was, now = old.get((bench, figure), "–"), new.get((bench, figure), "–")
        lines.append(f"| `{bench}` | {figure} | {was} | {now} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    after = Path(sys.argv[2]) if len(sys.argv) == 3 else results_dir(False)
    print(compare(Path(sys.argv[1]), after), end="")
