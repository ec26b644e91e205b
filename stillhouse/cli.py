"""The `stillhouse` command.

Run the service (on this host, from the STILLHOUSE_* settings):

    stillhouse dev [-v]                  # embedded defaults: migrate, API + one CPU worker;
                                         # logs in DATA_DIR/logs unless -v; banner last
    stillhouse api [--host H --port P]   # the gateway alone
    stillhouse worker --pool cpu --device cpu
    stillhouse worker --pool gpu --device cuda:all   # one worker process per GPU
    stillhouse migrate                   # alembic upgrade head
    stillhouse gc [--grace-seconds N] [--dry-run] [--json]   # delete unreferenced blobs

API keys (on the database directly; the API has no keys route, on purpose):

    stillhouse keys create [--tenant NAME] [--name TEXT] [--key KEY]   # prints the key alone
    stillhouse keys list [--tenant NAME] [--json]
    stillhouse keys revoke PREFIX_OR_KEY

Use a running service (STILLHOUSE_URL and STILLHOUSE_KEY, or --url and --key; tables
for people, --json for scripts, -q for the new id alone):

    stillhouse models upload FILE [--name NAME] [--spec SPEC.json] [--no-wait] [-q|--json]
    stillhouse models list | show ID | delete ID
    stillhouse models download ID [--format onnx|safetensors|onnx-int8] [-o FILE]
    stillhouse datasets upload FILE [--name NAME] [--label-column C] [--image-size 28x28]
                                    [--channels 1|3] [--no-wait] [-q|--json]
    stillhouse datasets list | show ID | delete ID
    stillhouse jobs create -f job.yaml|job.json|- [--set KEY=VALUE ...] [--watch] [-q|--json]
    stillhouse jobs list [--status S] | show ID | cancel ID
    stillhouse jobs watch ID             # bars (stage, epochs, loss, val accuracy, baseline)
    stillhouse jobs report ID [--json]   # teacher / student / baseline / int8

Exit codes: 0 done; 1 a job failed or was cancelled, an upload is invalid, or the API
refused the request; 2 bad usage; 3 the API key was refused; 4 the service cannot be
reached.

Built on click: it is already installed (uvicorn depends on it), it gives every option
a help line and nested groups, and its testing story is plain function calls. Typer
would add a layer of type-hint magic over the same click for no gain here. rich draws
the tables and progress bars.
"""

from __future__ import annotations

import sys

import click

from stillhouse.commands.admin import api, gc, migrate, worker
from stillhouse.commands.datasets import datasets
from stillhouse.commands.dev import dev
from stillhouse.commands.jobs import jobs
from stillhouse.commands.keys import keys
from stillhouse.commands.models import models
from stillhouse.errors import AuthError, ConnectionFailed, StillhouseError

EXIT_API_ERROR, EXIT_AUTH, EXIT_UNREACHABLE = 1, 3, 4


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Stillhouse: knowledge distillation as a service. `stillhouse dev` starts one on
    this machine; `models`, `datasets` and `jobs` use a running one."""


for command in (dev, api, worker, migrate, gc, keys, models, datasets, jobs):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """Run the command line in `argv` (default: sys.argv); return its exit code."""
    try:
        result = cli.main(args=argv, prog_name="stillhouse", standalone_mode=False)
    except click.exceptions.Exit as done:  # --help, --version
        return int(done.exit_code)
    except click.ClickException as exc:  # bad usage, a bad file
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except AuthError as exc:
        click.echo(f"error: the API refused the key: {exc.detail}", err=True)
        click.echo("Check STILLHOUSE_KEY or --key (`stillhouse keys list`).", err=True)
        return EXIT_AUTH
    except ConnectionFailed as exc:
        click.echo(f"error: {exc.detail}", err=True)
        return EXIT_UNREACHABLE
    except StillhouseError as exc:
        status = f" (HTTP {exc.status} {exc.error})" if exc.status else ""
        click.echo(f"error: {exc.detail}{status}", err=True)
        return EXIT_API_ERROR
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
