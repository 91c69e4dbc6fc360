"""The `teamtr-adapters` Typer app. Command modules are imported here; none imports torch at import.

`run` is the one error path: every way a command can end (a usage error found by the parser, a
`TeamTRError` from the library, an operating-system refusal, Ctrl-C) becomes one line on stderr and a
documented exit code, never a traceback. Typer 0.29 parses with its own copy of click (`typer._click`),
so its exceptions are caught from there, not from the `click` package."""
from __future__ import annotations

import errno
import os
import sys
from typing import Any, Callable

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
    add_completion=True,
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
from . import catalog_cmds  # noqa: E402  (registers runs list, adapter compare/deprecate, team lineage)
catalog_cmds.register(app)
from . import serve_cmds  # noqa: E402  (registers serve)
serve_cmds.register(app)


# Commands grouped in `--help`, by what a user is doing.
PANELS = {
    "Teams and versions": ("team", "adapter", "history", "runs", "registry"),
    "Play": ("eval", "run", "serve"),
    "Train": ("train", "report"),
    "Swap and roll back": ("swap", "rollback", "align"),
    "Share": ("hub",),
}


def _shows(text: str) -> Callable[[], str]:
    """A usage-name getter that returns `text`."""
    return lambda: text


def _no_type(ctx: Any) -> None:
    """Shows no type next to an argument in help (its metavar says it)."""
    return None


def _standard_help(command: Any, root: bool = True) -> Any:
    """Standard metavars and grouped commands in help, over the whole command tree (in place).

    Typer 0.29 prints `--json <bool>`, `--team <str>` and usage lines like `show {team}`; we print the
    argparse/click convention instead: flags alone (`--json`), values as the upper-case name (`--team TEAM`),
    arguments as `TEAM` (required) or `[ROLE]` (optional)."""
    from typer.core import TyperArgument, TyperOption

    for param in getattr(command, "params", []):
        if isinstance(param, TyperOption):
            if param.is_flag or param.count:
                param.metavar = ""
            elif param.metavar is None:
                param.metavar = (param.name or "value").upper()
        elif isinstance(param, TyperArgument):
            name = param.metavar or (param.name or "arg").upper()
            param.metavar = name
            usage = name if param.required else f"[{name}]"
            param.display_type_rich = _no_type  # type: ignore[method-assign]
            param._usage_display_name = _shows(usage)  # type: ignore[method-assign]
    help_option = command.get_help_option

    def get_help_option(ctx: Any, _orig: Any = help_option) -> Any:
        opt = _orig(ctx)
        if opt is not None:
            opt.metavar = ""
        return opt

    command.get_help_option = get_help_option
    subs = getattr(command, "commands", {})
    if not subs and not any(getattr(p, "name", None) == "registry_location" for p in command.params):
        command.params.append(_registry_option())
    for name, sub in subs.items():
        if root:
            for panel, names in PANELS.items():
                if name in names:
                    sub.rich_help_panel = panel
        _standard_help(sub, root=False)
    return command


def _set_registry(ctx: Any, param: Any, value: Any) -> Any:
    from .home import CHOICE

    if value:
        CHOICE["registry"] = value
    return value


def _registry_option() -> Any:
    """`--registry LOCATION` on every command: a directory or `hf://ORG/REPO[@BRANCH]` (see `home.open_registry`)."""
    from typing import Optional

    from typer._coercion import resolve_type_descriptor
    from typer.core import TyperOption

    descriptor = resolve_type_descriptor(Optional[str], typer.Option(None, "--registry"))
    return TyperOption(param_decls=["--registry", "registry_location"], type_descriptor=descriptor,
                       metavar="REGISTRY", expose_value=False, is_eager=True, callback=_set_registry, default=None,
                       help="The registry: a directory or hf://ORG/REPO\\[@BRANCH] (default: $TEAMTR_REGISTRY, "
                            "else the local one at $TEAMTR_HOME).")


def build_command() -> Any:
    """The click command tree of the app, with the help conventions above."""
    return _standard_help(typer.main.get_command(app))


def os_error_message(e: OSError) -> str:
    """One line for an operating-system refusal: what failed and on which path."""
    what = e.strerror or type(e).__name__
    paths = [p for p in (e.filename, e.filename2) if p is not None]
    return f"{what}: " + " -> ".join(repr(os.fsdecode(p)) for p in paths) if paths else f"{what} ({e})"


def run(argv: list[str] | None = None) -> int:
    """Run the CLI in-process and return its exit code (see README, "The command line").

    We parse and invoke ourselves rather than through `app(standalone_mode=False)`: typer's entry point turns
    Ctrl-C into a silent exit 130 and lets its parser errors out as exceptions of its private click copy."""
    from .home import CHOICE

    args = sys.argv[1:] if argv is None else list(argv)
    CHOICE["registry"] = None
    command = build_command()
    complete_var = f"_{PROG}_COMPLETE".replace("-", "_").upper()
    if os.environ.get(complete_var):  # the shell asks for completions (the script --show-completion prints)
        from typer.completion import shell_complete

        return shell_complete(command, {}, PROG, complete_var, os.environ[complete_var])
    try:
        with command.make_context(PROG, args) as ctx:
            command.invoke(ctx)
        return 0
    except typer.Exit as e:  # --help, --version, an explicit typer.Exit
        return e.exit_code
    except SystemExit as e:  # --show-completion and --install-completion end with sys.exit
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
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
