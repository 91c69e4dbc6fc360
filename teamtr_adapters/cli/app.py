"""The `teamtr-adapters` Typer app. Command modules are imported here; none imports torch at import."""
from __future__ import annotations

import sys

import typer
from rich.markup import escape

from ..errors import TeamTRError
from .render import err_console

app = typer.Typer(
    name="teamtr-adapters",
    help="Versioned LoRA agent teams over one frozen base: TeamTR training, a KL-bounded swap gate, Hub bundles.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

from . import registry_cmds  # noqa: E402  (registers team, adapter, registry, history)

registry_cmds.register(app)
from . import runtime_cmds  # noqa: E402  (registers eval, run)
runtime_cmds.register(app)
from . import gate_cmds  # noqa: E402  (registers swap, rollback, align, team rollback, adapter diff)
gate_cmds.register(app)
from . import hub_cmds  # noqa: E402  (registers hub push/pull)
hub_cmds.register(app)
from . import train_cmds  # noqa: E402  (registers train, report)
train_cmds.register(app)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI in-process and return its exit code: a `TeamTRError` becomes one line on stderr."""
    import click

    try:
        code = app(args=argv, standalone_mode=False, prog_name="teamtr-adapters")
        return code if isinstance(code, int) else 0
    except TeamTRError as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except (click.Abort, KeyboardInterrupt):
        err_console.print("[bold red]interrupted[/]")
        return 130


def main() -> None:
    """Console entry point."""
    sys.exit(run())
