"""What every benchmark does with its figures: prints markdown tables, and `--json PATH` writes them (bench/out/
is git-ignored)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A markdown table: the header, its rule, a line per row (cells already formatted)."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | None, result: Any) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2, default=str))
