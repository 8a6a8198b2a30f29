"""Write the JSON Schemas of the current event versions (`python -m shared.events.schemas`)."""

from __future__ import annotations

import sys

from shared.events.schemas import FOLDER, current_schemas, incompatibilities, load, render


def main() -> int:
    refused = 0
    for name, schema in current_schemas().items():
        kept = load(name)
        if kept == schema:
            continue
        problems = [] if kept is None else incompatibilities(kept, schema)
        if problems:
            refused += 1
            print(
                f"{name}: incompatible with the released schema ({'; '.join(problems)}); "
                "make it a new schemaversion with an upcaster (docs/EVENTS.md#schema-versions)",
                file=sys.stderr,
            )
            continue
        (FOLDER / name).write_text(render(schema), encoding="utf-8")
        print(f"wrote {FOLDER / name}")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
