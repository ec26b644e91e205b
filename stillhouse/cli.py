"""The `stillhouse` command.

stillhouse dev                       # embedded defaults: migrate, API + one CPU worker
stillhouse api [--host H --port P]   # the gateway alone
stillhouse worker --pool cpu --device cpu
stillhouse worker --pool gpu --device cuda:all   # one worker process per GPU
stillhouse migrate                   # alembic upgrade head
stillhouse keys create [--tenant NAME] [--name TEXT] [--key KEY]   # prints the key alone
stillhouse keys list [--tenant NAME] [--json]
stillhouse keys revoke PREFIX_OR_KEY
stillhouse gc [--grace-seconds N] [--dry-run] [--json]   # delete unreferenced blobs
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from core.config import get_settings


def cmd_migrate(_: argparse.Namespace) -> int:
    from core.migrate import upgrade

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    print(f"database migrated: {_redacted(settings.resolved_database_url)}")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from core.keys import KeyRefused, issue_key

    try:
        created = issue_key(get_settings(), args.tenant, args.name, args.key)
    except KeyRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # The key alone on stdout, so `KEY=$(stillhouse keys create)` captures it.
    print(created.key)
    print(f"API key for tenant '{created.tenant}' (shown once; store it now)", file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    import json

    from core.keys import list_keys

    keys = list_keys(get_settings(), args.tenant)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "prefix": k.prefix,
                        "name": k.name,
                        "tenant": k.tenant,
                        "created_at": k.created_at.isoformat(),
                        "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
                    }
                    for k in keys
                ],
                indent=2,
            )
        )
        return 0
    rows = [("PREFIX", "NAME", "TENANT", "CREATED", "REVOKED")] + [
        (
            k.prefix,
            k.name or "-",
            k.tenant,
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "-",
        )
        for k in keys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from core.keys import KeyRefused, NoSuchKey, revoke_key

    try:
        key, revoked_now = revoke_key(get_settings(), args.key)
    except (KeyRefused, NoSuchKey) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, KeyRefused) else 1
    when = f"{key.revoked_at:%Y-%m-%d %H:%M:%S} UTC" if key.revoked_at else ""
    state = "revoked" if revoked_now else f"was already revoked at {when}"
    print(f"key {key.prefix}... of tenant '{key.tenant}' {state}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from core.blobs import collect
    from core.db import make_engine, make_sessionmaker
    from core.storage import ArtifactStore

    settings = get_settings()
    grace = settings.gc_grace_s if args.grace_seconds is None else args.grace_seconds
    engine = make_engine(settings.resolved_database_url)
    try:
        with make_sessionmaker(engine)() as session:
            store = ArtifactStore(settings.resolved_storage_url)
            report = collect(store, session, grace, dry_run=args.dry_run)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(asdict(report)))
        return 0
    verb = "would delete" if report.dry_run else "deleted"
    print(
        f"{verb} {report.deleted} unreferenced blob(s), {report.reclaimed_bytes} bytes "
        f"({report.reclaimed_bytes / 1024**2:.1f} MiB); kept {report.referenced} referenced and "
        f"{report.young} younger than {grace:g} s, of {report.blobs} blobs"
    )
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "service.main:app",
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level=args.log_level,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    if args.device == "cuda:all":
        from stillhouse.gpus import run_per_gpu

        return run_per_gpu(args.pool, args.log_level)
    os.environ["STILLHOUSE_WORKER_POOL"] = args.pool
    os.environ["STILLHOUSE_WORKER_DEVICE"] = args.device
    get_settings.cache_clear()
    if args.device.startswith("cuda"):
        import torch

        index = int(args.device.split(":", 1)[1]) if ":" in args.device else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            print(f"error: device {args.device} is not available on this host", file=sys.stderr)
            return 2
    elif args.device != "cpu":
        print(
            f"error: device must be 'cpu', 'cuda[:N]' or 'cuda:all', not '{args.device}'",
            file=sys.stderr,
        )
        return 2
    from workers.app import celery_app

    # solo pool: one process, one task at a time, and CUDA is never initialised
    # in a parent that forks (see docs/architecture.md, "Workers and pools").
    celery_app.worker_main(
        [
            "worker",
            "--queues",
            args.pool,
            "--pool",
            "solo",
            "--concurrency",
            "1",
            "--hostname",
            f"{args.pool}-{args.device.replace(':', '')}-{os.getpid()}@%h",
            "--loglevel",
            args.log_level.upper(),
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from core.keys import ensure_dev_key

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    cmd_migrate(args)
    try:
        key = ensure_dev_key(settings)
    except ValueError as exc:  # a STILLHOUSE_API_KEY too short to use
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not _port_free(settings.host, settings.port):
        print(
            f"error: {settings.host}:{settings.port} is in use; stop what runs there or set "
            "STILLHOUSE_PORT",
            file=sys.stderr,
        )
        return 1
    env = {**os.environ, "STILLHOUSE_DATA_DIR": str(settings.data_dir.resolve())}
    exe = [sys.executable, "-m", "stillhouse.cli"]
    children = [
        subprocess.Popen([*exe, "worker", "--pool", "cpu", "--device", "cpu"], env=env),
        subprocess.Popen([*exe, "api", "--log-level", "warning"], env=env),
    ]
    url = f"http://{settings.host}:{settings.port}"
    started = _wait_ready(url, children)
    stopping = not started
    if stopping:
        print(
            f"error: the service did not come up at {url}; see the messages above "
            "(is the port in use? set STILLHOUSE_PORT)",
            file=sys.stderr,
        )
    else:
        print(f"\nStillhouse is running at {url}")
        print(f"API key: {key}")
        print(f"Dashboard: {url}/#key={key}   API docs: {url}/docs")
        print(f"  export STILLHOUSE_URL={url} STILLHOUSE_KEY={key}\nCtrl-C stops it.", flush=True)

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.3)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
    return 0 if stopping and started else 1


def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _wait_ready(url: str, children: list[subprocess.Popen[bytes]]) -> bool:
    """True once this run's API answers; False if a child died or time ran out."""
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(child.poll() is not None for child in children):
            return False
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return all(child.poll() is None for child in children)
        except OSError:
            time.sleep(0.2)
    return False


def _redacted(url: str) -> str:
    head, sep, tail = url.partition("@")
    return f"{head.split(':')[0]}://***@{tail}" if sep else url


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stillhouse", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dev", help="migrate and run the API plus one CPU worker").set_defaults(
        fn=cmd_dev
    )
    sub.add_parser("migrate", help="apply database migrations").set_defaults(fn=cmd_migrate)
    api = sub.add_parser("api", help="run the HTTP gateway")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.add_argument("--log-level", default="info")
    api.set_defaults(fn=cmd_api)
    worker = sub.add_parser("worker", help="run a worker for one pool and device")
    worker.add_argument("--pool", default="cpu")
    worker.add_argument(
        "--device", default="cpu", help="cpu, cuda:N, or cuda:all (one worker process per GPU)"
    )
    worker.add_argument("--log-level", default="info")
    worker.set_defaults(fn=cmd_worker)
    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True
    )
    create = keys.add_parser("create", help="create an API key (printed once)")
    create.add_argument(
        "--tenant", help="the tenant the key belongs to (created if missing); default: a new one"
    )
    create.add_argument("--name", default="", help="a label for the key, shown by 'keys list'")
    create.add_argument("--key", help="use this key (24+ characters) instead of generating one")
    create.set_defaults(fn=cmd_keys_create)
    listing = keys.add_parser("list", help="list keys: prefix, name, tenant, created, revoked")
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    listing.set_defaults(fn=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key at once (by its prefix or the key)")
    revoke.add_argument("key", metavar="PREFIX_OR_KEY")
    revoke.set_defaults(fn=cmd_keys_revoke)
    gc = sub.add_parser("gc", help="delete stored blobs that no row references")
    gc.add_argument(
        "--grace-seconds",
        type=float,
        help="spare blobs younger than this (default: STILLHOUSE_GC_GRACE_S, one hour): an "
        "upload or a job may be about to record them",
    )
    gc.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    gc.add_argument("--json", action="store_true", help="print the report as JSON")
    gc.set_defaults(fn=cmd_gc)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
