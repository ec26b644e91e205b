"""`stillhouse keys create|list|revoke`: API keys, managed in the database directly.

The API has no keys route on purpose: whoever can reach the database (the operator)
hands out keys; a key cannot mint or revoke keys over HTTP."""

from __future__ import annotations

import json

import click

from core.config import get_settings

DIRECT = "Works on the database directly (STILLHOUSE_DATABASE_URL), not through the API."


@click.group(help=f"Manage API keys. {DIRECT}")
def keys() -> None:
    pass


@keys.command("create", help=f"Create an API key; prints the key alone (once). {DIRECT}")
@click.option(
    "--tenant", help="The tenant the key belongs to (created if missing); default: a new one."
)
@click.option("--name", default="", help="A label for the key, shown by 'keys list'.")
@click.option("--key", "chosen", help="Use this key (24+ characters) instead of generating one.")
def create(tenant: str | None, name: str, chosen: str | None) -> int:
    from core.keys import KeyRefused, issue_key

    try:
        created = issue_key(get_settings(), tenant, name, chosen)
    except KeyRefused as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    # The key alone on stdout, so `KEY=$(stillhouse keys create)` captures it.
    click.echo(created.key)
    click.echo(f"API key for tenant '{created.tenant}' (shown once; store it now)", err=True)
    return 0


@keys.command("list", help=f"List keys: prefix, name, tenant, created, revoked. {DIRECT}")
@click.option("--tenant", help="Only this tenant's keys.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def list_(tenant: str | None, as_json: bool) -> int:
    from core.keys import list_keys

    found = list_keys(get_settings(), tenant)
    if as_json:
        rows = [
            {
                "prefix": k.prefix,
                "name": k.name,
                "tenant": k.tenant,
                "created_at": k.created_at.isoformat(),
                "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
            }
            for k in found
        ]
        click.echo(json.dumps(rows, indent=2))
        return 0
    table = [("PREFIX", "NAME", "TENANT", "CREATED", "REVOKED")] + [
        (
            k.prefix,
            k.name or "-",
            k.tenant,
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "-",
        )
        for k in found
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo("  ".join(cells).rstrip())
    return 0


@keys.command("revoke", help=f"Revoke a key at once, by its prefix or the whole key. {DIRECT}")
@click.argument("key", metavar="PREFIX_OR_KEY")
def revoke(key: str) -> int:
    from core.keys import KeyRefused, NoSuchKey, revoke_key

    try:
        row, revoked_now = revoke_key(get_settings(), key)
    except (KeyRefused, NoSuchKey) as exc:
        click.echo(f"error: {exc}", err=True)
        return 2 if isinstance(exc, KeyRefused) else 1
    at = f"{row.revoked_at:%Y-%m-%d %H:%M:%S} UTC" if row.revoked_at else ""
    state = "revoked" if revoked_now else f"was already revoked at {at}"
    click.echo(f"key {row.prefix}... of tenant '{row.tenant}' {state}")
    return 0
