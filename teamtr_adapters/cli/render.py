"""Output helpers shared by every command: rich tables for people, `--json` for programs."""
from __future__ import annotations

import json
import sys
from typing import Any, Callable

import typer
from rich import box
from rich.cells import cell_len
from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.table import Table
from rich.text import Text

# No emoji codes: `:b:` in a name or message is text, not a picture. Text that comes from users (names,
# messages, paths, metadata) is printed as `Text` (never parsed as markup); markup is for our own labels.
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)

JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables.")


def emit(data: Any, as_json: bool, render: Callable[[Any], None] | None = None) -> None:
    """Print `data` as JSON (one document on stdout) or through `render` for people."""
    if as_json or render is None:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    else:
        render(data)


def print_error(message: str, prefix: bool = True) -> None:
    """One line on stderr: `error: MESSAGE` (the message printed literally, newlines folded)."""
    line = " ".join(str(message).split("\n"))
    err_console.print(Text.assemble(("error: ", "bold red") if prefix else "", (line, "bold red" if not prefix else "")),
                      highlight=False, soft_wrap=True)


def print_line(text: str) -> None:
    """Plain text on stdout (help, version), printed literally."""
    sys.stdout.write(text.rstrip("\n") + "\n")


def cell(v: Any) -> Text:
    """A table cell: our own `Text` (possibly styled) as it is, anything else as literal text."""
    return v if isinstance(v, Text) else Text("" if v is None else str(v))


def table(title: str, columns: list[str], rows: list[list[Any]], wrap: tuple[str, ...] = (),
          right: tuple[str, ...] = (), caption: str | None = None) -> RenderableType:
    """A table that fits the terminal without cutting its key columns.

    Every column is a key column (names, versions, numbers: printed whole, never wrapped or cut) except those
    named in `wrap` (free text: folded to the width the key columns leave). Columns named in `right` are
    right-justified (numbers). Column gaps shrink from two spaces to one when the table would not fit."""
    cells = [[cell(v) for v in r] for r in rows]
    width = console.width

    def natural(i: int) -> int:
        lines = [cell_len(line) for r in cells for line in r[i].plain.split("\n")]
        return max([cell_len(columns[i])] + lines)

    nat = [natural(i) for i in range(len(columns))]
    least = sum(w if c not in wrap else min(w, 10) for c, w in zip(columns, nat))
    gap = 2 if least + 2 * (len(columns) - 1) <= width else 1
    key_width = sum(w for c, w in zip(columns, nat) if c not in wrap) + gap * (len(columns) - 1)
    free = [i for i, c in enumerate(columns) if c in wrap]
    room = max(10 * len(free), width - key_width)
    # Share the room among free-text columns: narrow ones keep their natural width, the rest split what is left.
    limits: dict[int, int] = {}
    pending = sorted(free, key=lambda i: nat[i])
    while pending:
        share = room // len(pending)
        i = pending.pop(0)
        limits[i] = max(min(nat[i], share), min(10, nat[i]))
        room -= limits[i]
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
              padding=(0, 1) if gap == 2 else (0, 0), collapse_padding=True)
    for i, c in enumerate(columns):
        justify: JustifyMethod = "right" if c in right else "left"
        if i in limits:
            t.add_column(c, overflow="fold", max_width=limits[i], justify=justify)
        else:
            t.add_column(c, no_wrap=True, min_width=nat[i], justify=justify)
    for r in cells:
        t.add_row(*r)
    # The title above the table, wrapped at the terminal's width rather than the table's.
    parts: list[RenderableType] = [Text(title, style="italic")] if title else []
    parts.append(t)
    if caption:
        parts.append(Text(caption, style="dim"))
    return Group(*parts)


def progress(**kw: Any):
    """A rich progress bar on stderr (kept off stdout so that `--json` output stays clean)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console, transient=True, **kw)
