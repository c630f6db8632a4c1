"""Every `mnistctl` command line in README.md and docs/ is one the real CLI accepts: the command
exists, every option it uses exists, and a value given to a choice option is one of its choices.
A renamed option or command breaks this test, not a reader's copy-paste."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import pytest
import typer
from harness import PROJECT_ROOT
from typer._click.exceptions import UsageError  # typer >= 0.20 carries its own click
from typer.testing import CliRunner

from mnistctl.cli import app

DOCS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
# A command in a code block (optionally run from the venv), or in an inline code span.
_BLOCK_LINE = re.compile(r"^\s*(?:\$\s*)?(?:\.venv/bin/)?mnistctl\s+(?P<args>[^#\n]*)")
_INLINE = re.compile(r"`(?:\.venv/bin/)?mnistctl\s+(?P<args>[^`]*)`")
_FENCE = re.compile(r"^\s*```")


@dataclass(frozen=True)
class DocCommand:
    where: str
    args: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: mnistctl {' '.join(self.args)}"


def doc_commands() -> list[DocCommand]:
    found: list[DocCommand] = []
    for doc in DOCS:
        in_block = False
        for number, line in enumerate(doc.read_text().splitlines(), start=1):
            if _FENCE.match(line):
                in_block = not in_block
                continue
            where = f"{doc.relative_to(PROJECT_ROOT)}:{number}"
            matches = [_BLOCK_LINE.match(line)] if in_block else list(_INLINE.finditer(line))
            for match in filter(None, matches):
                args = tuple(shlex.split(match.group("args").replace("…", "")))
                # A diagram mentioning mnistctl is not a command line: those start with a command word.
                if args and re.fullmatch(r"[a-z][a-z-]*", args[0]):
                    found.append(DocCommand(where, args))
    return found


COMMANDS = doc_commands()
RUNNER = CliRunner()
COMMANDS_BY_NAME: dict = typer.main.get_command(app).commands  # type: ignore[attr-defined]


def _enum_choices(param: object) -> list[str] | None:
    # typer >= 0.20 carries its own click: a choice option is known by its Enum annotation.
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return [str(member.value) for member in annotation]
    return None


def problems_with(command: DocCommand) -> list[str]:
    """What the real CLI rejects in `command`: the command, the option names (the parser runs before
    `--help` answers), a value given to a choice option, and an argument the command does not take."""
    if not command.args:
        return []
    result = RUNNER.invoke(app, [*command.args, "--help"])
    if result.exit_code != 0:
        lines = (line.strip("│╭╰─ ") for line in result.output.splitlines())
        return [" ".join(line for line in lines if line) or f"exit code {result.exit_code}"]
    name, *rest = command.args
    found = _unexpected_arguments(name, rest)
    options = {opt: param for param in COMMANDS_BY_NAME[name].params for opt in param.opts}
    for index, token in enumerate(rest):
        flag, _, inline = token.partition("=")
        choices = _enum_choices(options[flag]) if flag in options else None
        value = inline or (rest[index + 1] if index + 1 < len(rest) else None)
        if choices is not None and value is not None and value not in choices:
            found.append(f"{flag} {value!r} is not one of {choices}")
    return found


def _unexpected_arguments(name: str, rest: list[str]) -> list[str]:
    """What the parser says about the line's arguments, parsed as the command would get them (without
    running it). `--help` answers before positional arguments are looked at, so a picture file given to a
    command that takes none passes that check. A missing required option or a placeholder value
    (`--out OUT`, `--max-batch N`) is prose abbreviating the command, not a wrong one."""
    try:
        COMMANDS_BY_NAME[name].make_context(name, list(rest))
    except typer.BadParameter:
        return []
    except UsageError as error:
        return [error.format_message()]
    return []


def test_the_docs_hold_mnistctl_command_lines_to_check():
    # The scan itself must work: the README's quick start and the serving docs have several.
    assert len(COMMANDS) >= 10
    assert any(c.args[:1] == ("smoke",) for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_documented_command_is_accepted_by_the_cli(command: DocCommand):
    assert problems_with(command) == []


def test_a_renamed_option_is_caught():
    assert problems_with(DocCommand("x", ("predict", "--flavor", "vertex", "digit.png"))) == []
    assert problems_with(DocCommand("x", ("smoke", "--stack", "local", "digit.png"))) != []
    assert problems_with(DocCommand("x", ("train", "--set", "eta=0.1"))) != []
    assert problems_with(DocCommand("x", ("serve", "--flavor", "azure"))) != []
    assert problems_with(DocCommand("x", ("deploy",))) != []
    assert problems_with(DocCommand("x", ("smoke", "--stack", "local"))) == []


def test_docs_are_where_the_scan_looks():
    assert all(isinstance(doc, Path) and doc.exists() for doc in DOCS)
