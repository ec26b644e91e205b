"""Every `stillhouse` command and option explains itself in `--help`."""

from __future__ import annotations

import click

from stillhouse.cli import cli


def _commands(group: click.Group, path: str = "stillhouse") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in group.commands.items():
        found.append((f"{path} {name}", command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, f"{path} {name}"))
    return found


def test_every_command_and_option_has_a_help_line() -> None:
    commands = _commands(cli)
    names = {path for path, _ in commands}
    for verb in ("models", "datasets", "jobs", "keys"):
        assert f"stillhouse {verb} list" in names
    assert {
        "stillhouse jobs watch",
        "stillhouse jobs report",
        "stillhouse models download",
    } <= names
    missing = [
        f"{path} {param.opts[0]}"
        for path, command in commands
        for param in command.params
        if isinstance(param, click.Option) and not (param.help or "").strip()
    ]
    assert missing == [], f"options without a help line: {missing}"
    undocumented = [path for path, command in commands if not (command.help or "").strip()]
    assert undocumented == [], f"commands without help: {undocumented}"
