"""Output helpers shared by every command: rich tables for people, `--json` for programs."""
from __future__ import annotations

import json
import sys
from typing import Any, Callable

import typer
from rich.console import Console
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


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=Text(title), title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[cell(v) for v in r])
    return t


def progress(**kw: Any):
    """A rich progress bar on stderr (kept off stdout so that `--json` output stays clean)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console, transient=True, **kw)
