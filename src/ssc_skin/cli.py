"""Project commands: Kedro's own `kedro run`, with the fold-parallel runner as its default.

Kedro loads `<package>.cli` and lets its `cli` group override the built-in commands. Only the
default of `--runner` changes (`ssc_skin.runner.FoldParallelRunner`: the k folds and the final
fit two nodes at a time); every other option, and `--runner SequentialRunner` to run one node at
a time, are Kedro's.
"""

from __future__ import annotations

import copy

import click
from kedro.framework.cli.project import run as kedro_run

DEFAULT_RUNNER = "ssc_skin.runner.FoldParallelRunner"


def with_default_runner(command: click.Command, runner: str) -> click.Command:
    """A copy of `command` whose `--runner` defaults to `runner` (the original is untouched)."""
    changed = copy.copy(command)
    changed.params = [copy.copy(p) for p in command.params]
    for param in changed.params:
        if param.name == "runner":
            param.default = runner
            param.help = f"{param.help or ''} Default here: {runner}.".strip()
    return changed


@click.group(name="ssc_skin")
def cli() -> None:
    """Project commands."""


cli.add_command(with_default_runner(kedro_run, DEFAULT_RUNNER), "run")
