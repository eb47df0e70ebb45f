"""The command line as a layer: its help needs no torch, and the library never imports it."""

import ast
import re
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
    assert _last_line_of(code) == "no torch"


def _last_line_of(code: str) -> str:
    """The last line that ``code`` prints, run in a fresh interpreter (which must succeed)."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


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


# The layers below the training, evaluation, serving and run-listing code: networks, text,
# data, the model families and the generator file never reach up into those.
LOWER_LAYERS = ["models", "text", "data", "families", "generator_file.py", "choices.py"]
UPPER_LAYERS = ("training", "evaluation", "serve", "runs", "commands", "cli")


def _modules_of(name: str) -> list[Path]:
    path = PACKAGE / name
    return [path] if path.suffix == ".py" else sorted(path.rglob("*.py"))


def test_lower_layers_never_import_the_upper_ones():
    offenders = {}
    for layer in LOWER_LAYERS:
        for path in _modules_of(layer):
            bad = sorted(
                name
                for name in _imported_modules(path)
                if any(name.startswith(f"stackgan_cli.{upper}") for upper in UPPER_LAYERS)
            )
            if bad:
                offenders[str(path.relative_to(PACKAGE))] = bad
    assert offenders == {}


def test_the_family_registry_and_the_runs_table_import_no_torch():
    code = (
        "import sys\n"
        "import stackgan_cli.families, stackgan_cli.choices, stackgan_cli.runs.records\n"
        "from stackgan_cli.families import FAMILIES, train_spec\n"
        "assert FAMILIES and all(spec.load for spec in FAMILIES.values())\n"
        "print('torch loaded' if 'torch' in sys.modules else 'no torch')\n"
    )
    assert _last_line_of(code) == "no torch"


# What asking "which architecture is this?" looks like; only a family answers it.
ARCHITECTURE_BRANCH = re.compile(
    r"arch\s*[!=]=\s*[\"']|stage\s+is\s+(not\s+)?None|\.stage\s*[!=]=|isinstance\([^)]*StackGANv"
)


def test_only_the_families_and_networks_branch_on_the_architecture():
    allowed = (PACKAGE / "families", PACKAGE / "models")
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if not any(root in path.parents for root in allowed)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if ARCHITECTURE_BRANCH.search(line)
    ]
    assert offenders == []


def test_every_family_in_the_registry_loads_and_names_itself():
    from stackgan_cli.families import FAMILIES, spec_for_run
    from stackgan_cli.families.base import Family

    for key, spec in FAMILIES.items():
        family = spec.load()
        assert family.spec is spec and spec.key == key
        assert spec_for_run(spec.arch, spec.stage) is spec
        # A family that trains a generator is a Family; one that trains encoders (DAMSM) is
        # its trainer.
        assert issubclass(family, Family) == spec.trains_generator, key
