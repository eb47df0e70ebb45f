"""The ``stackgan`` command: a Typer app whose commands live in ``stackgan_cli/commands/``.

Each command parses its options and calls one function of the library. Errors the user can fix
(``StackGANError``) become one red line on stderr and exit code 1; options that make no sense
together (``UsageError``, found by the library) and bad option values (``typer.BadParameter``)
exit with 2; ``--debug`` shows the full traceback instead.
"""

from typing import Annotated

import typer
from rich.markup import escape
from typer.core import TyperGroup

from stackgan_cli import __version__
from stackgan_cli.console import err
from stackgan_cli.errors import StackGANError, UsageError

_debug = False


class _FriendlyErrors(TyperGroup):
    """Turns known errors into one-line messages unless ``--debug`` was given."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except StackGANError as exc:
            if _debug:
                raise
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2 if isinstance(exc, UsageError) else 1) from None
        except KeyboardInterrupt:
            if _debug:
                raise
            err.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_FriendlyErrors,
    name="stackgan",
    help="StackGAN text-to-image synthesis: prepare data, train, resume, generate, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"stackgan {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    global _debug
    _debug = debug


# Command registration: one line per command module (keep this block sorted by workflow order).
# --- commands ---
from stackgan_cli.commands import prepare as _prepare  # noqa: E402

app.add_typer(_prepare.app, name="prepare")
from stackgan_cli.commands import train as _train  # noqa: E402

app.command("train")(_train.train)
from stackgan_cli.commands import resume as _resume  # noqa: E402

app.command("resume")(_resume.resume)
from stackgan_cli.commands import generate as _generate  # noqa: E402

app.command("generate")(_generate.generate)
from stackgan_cli.commands import evaluate as _evaluate  # noqa: E402

app.command("evaluate")(_evaluate.evaluate)
from stackgan_cli.commands import runs as _runs  # noqa: E402

app.command("runs")(_runs.runs)
from stackgan_cli.commands import serve as _serve  # noqa: E402

app.command("serve")(_serve.serve)
# --- end commands ---


def main() -> None:
    """Entry point of the ``stackgan`` console script."""
    app()
