"""The command line as a layer: its help needs no torch, and the library never imports it."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stackgan_cli"
COMMANDS = [
    "prepare",
    "prepare cub",
    "prepare shapes",
    "train",
    "resume",
    "generate",
    "evaluate",
    "runs",
    "serve",
]


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_imports_no_torch(command):
    code = (
        "import sys\n"
        "from stackgan_cli.cli import app\n"
        "try:\n"
        f"    app({[*command.split(), '--help']!r})\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "print('torch loaded' if 'torch' in sys.modules else 'no torch')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "no torch"


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_library_modules_do_not_import_the_cli_layer():
    cli_layer = {PACKAGE / "cli.py", PACKAGE / "__main__.py"}
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in cli_layer or (PACKAGE / "commands") in path.parents:
            continue
        bad = sorted(
            name
            for name in _imported_modules(path)
            if name == "typer"
            or name.startswith("typer.")
            or name.startswith("stackgan_cli.commands")
            or name.startswith("stackgan_cli.cli")
        )
        if bad:
            offenders[str(path.relative_to(PACKAGE))] = bad
    assert offenders == {}


def test_commands_do_not_import_each_other():
    commands = PACKAGE / "commands"
    entry_points = {p.stem for p in commands.glob("*.py")} - {"__init__", "options", "outcome"}
    offenders = {}
    for path in sorted(commands.glob("*.py")):
        bad = sorted(
            name
            for name in _imported_modules(path)
            if any(name.startswith(f"stackgan_cli.commands.{other}") for other in entry_points)
        )
        if bad:
            offenders[path.name] = bad
    assert offenders == {}


def test_test_modules_do_not_import_each_other():
    tests = Path(__file__).resolve().parent
    offenders = {
        path.name: sorted(name for name in _imported_modules(path) if name.startswith("test_"))
        for path in sorted(tests.glob("test_*.py"))
    }
    assert {name: bad for name, bad in offenders.items() if bad} == {}
