"""The `teamtr-adapters` Typer app. Command modules are imported here; none imports torch at import.

`run` is the one error path: every way a command can end (a usage error found by the parser, a
`TeamTRError` from the library, an operating-system refusal, Ctrl-C) becomes one line on stderr and a
documented exit code, never a traceback. Typer 0.29 parses with its own copy of click (`typer._click`),
so its exceptions are caught from there, not from the `click` package."""
from __future__ import annotations

import errno
import os
import sys

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError

from .. import __version__
from ..errors import StorageError, TeamTRError
from .render import print_error, print_line

PROG = "teamtr-adapters"
EXIT_USAGE, EXIT_INTERRUPTED = 2, 130

app = typer.Typer(
    name=PROG,
    help="Versioned LoRA agent teams over one frozen base: TeamTR training, a KL-bounded swap gate, Hub bundles.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        print_line(f"{PROG} {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, expose_value=False,
                                       callback=_print_version, help="Print the version and exit.")) -> None:
    """Versioned LoRA agent teams over one frozen base: TeamTR training, a KL-bounded swap gate, Hub bundles."""


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


def os_error_message(e: OSError) -> str:
    """One line for an operating-system refusal: what failed and on which path."""
    what = e.strerror or type(e).__name__
    paths = [p for p in (e.filename, e.filename2) if p is not None]
    return f"{what}: " + " -> ".join(repr(os.fsdecode(p)) for p in paths) if paths else f"{what} ({e})"


def run(argv: list[str] | None = None) -> int:
    """Run the CLI in-process and return its exit code (see README, "The command line").

    We parse and invoke ourselves rather than through `app(standalone_mode=False)`: typer's entry point turns
    Ctrl-C into a silent exit 130 and lets its parser errors out as exceptions of its private click copy."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = typer.main.get_command(app)
    try:
        with command.make_context(PROG, args) as ctx:
            command.invoke(ctx)
        return 0
    except typer.Exit as e:  # --help, --version, an explicit typer.Exit
        return e.exit_code
    except NoArgsIsHelpError as e:  # the bare program: typer has rendered the help while raising this
        if e.format_message().strip():
            print_line(e.format_message())
        return 0
    except ClickException as e:  # usage: unknown command or option, missing or malformed argument
        ctx = getattr(e, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        print_error(e.format_message().rstrip(".") + hint)
        return e.exit_code
    except TeamTRError as e:
        print_error(str(e))
        return e.exit_code
    except (KeyboardInterrupt, typer.Abort):
        print_error("interrupted", prefix=False)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `teamtr-adapters history | head`: the reader left; say nothing more
        _silence_stdout()
        return 1
    except OSError as e:  # the file system refused (permissions, a file where a dir belongs, no space)
        if e.errno == errno.EPIPE:
            _silence_stdout()
            return 1
        err = StorageError(os_error_message(e))
        print_error(str(err))
        return err.exit_code


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main() -> None:
    """Console entry point."""
    sys.exit(run())
