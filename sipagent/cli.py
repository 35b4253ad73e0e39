"""Command line: ``sipagent run [--config FILE]``, ``sipagent twilio setup [options]``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys

from pydantic import SecretStr

from .history import HistoryRecorder, HistoryStore, open_history
from .logs import add_secret, configure_logging
from .settings import ConfigError, Settings, load_settings, parse_auth_users

__all__ = ["main", "run"]

logger = logging.getLogger("sipagent")


class HistoryPages:
    """The admin's view of the history store: ``{"total": n, "calls": [...]}`` pages."""

    def __init__(self, store: HistoryStore) -> None:
        self._store = store

    async def list(self, limit: int, offset: int) -> dict[str, object]:
        page = await self._store.list(limit=limit, offset=offset)
        return {"total": page.total, "calls": list(page)}

    async def get(self, session_id: str) -> dict[str, object] | None:
        return await self._store.get(session_id)


async def run(settings: Settings) -> None:
    """Run the server and its admin until SIGINT/SIGTERM (the second one is immediate)."""
    from admin.app import create_app
    from admin.metrics import Metrics
    from admin.server import start_admin

    from .server import Server

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    server = Server(settings)
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            logger.info("stopping: draining live calls (signal again to stop at once)")
            stop.set()
        elif signals == 2 and main_task is not None:
            # Only the drain is cut short: the calls are still hung up and the ports closed.
            logger.warning("stopping at once")
            main_task.cancel()

    # Before anything listens: a signal during start-up must not kill the process outright.
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal)
            handled.append(sig)
    try:
        history = await open_history(settings.database_url)
        recorder = HistoryRecorder(history, server.registry)
        metrics = Metrics()
        metrics.sip_counters(lambda: {**server.ua.counters, **server.policy.metric_counters()})
        metrics.track(server.registry)
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        app = create_app(
            server.registry, server, token=token, metrics=metrics, history=HistoryPages(history),
            recordings_dir=settings.recordings_dir,
        )
        try:
            await server.start()
            admin = await start_admin(app, settings.admin_host, settings.admin_port)
        except BaseException:
            await server.stop()
            await recorder.close()
            await history.close()
            raise
        logger.info("admin on %s", admin.url)
        freeze_startup_heap()
        try:
            await stop.wait()
            await server.stop(drain_timeout=settings.drain_timeout)
        except asyncio.CancelledError:
            if signals < 2 or main_task is None:
                raise
            main_task.uncancel()
            await server.stop()
            raise
        finally:
            app.state.events.close()
            await admin.stop()
            await recorder.close()
            await history.close()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


def freeze_startup_heap() -> int:
    """Take what start-up allocated out of the garbage collector's sight; return how much.

    Modules, the openai SDK's and FastAPI's types, settings: a few hundred thousand objects
    that live as long as the process. A full collection walks every one of them — 50 to 110 ms
    with 200 live calls, every half minute or so, and every call's audio stalls that long.
    Frozen, a full collection walks only what the calls made since.
    """
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.debug("%d start-up objects frozen out of the garbage collector", frozen)
    return frozen


def _mask_secrets(settings: Settings) -> None:
    """Have the log formatters mask every secret setting, should one ever be logged."""
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            add_secret(value.get_secret_value())
    if settings.auth_users is not None:
        for password in parse_auth_users(settings.auth_users.get_secret_value()).values():
            add_secret(password)


def _add_twilio_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    twilio_parser = sub.add_parser("twilio", help="configure Twilio to send calls here")
    twilio_sub = twilio_parser.add_subparsers(dest="twilio_command", required=True)
    setup = twilio_sub.add_parser(
        "setup",
        help="create or update an Elastic SIP Trunk whose origination URI is this server",
        description="Create or update a Twilio Elastic SIP Trunk sending its calls here; "
        "running it again changes only what differs. Credentials: TWILIO_ACCOUNT_SID and "
        "TWILIO_AUTH_TOKEN.",
    )
    setup.add_argument("--config", help="TOML settings file (default: config/*.toml)")
    setup.add_argument("--trunk-name", default="sipagent", help="trunk friendly name (sipagent)")
    setup.add_argument(
        "--origination-uri",
        help="where Twilio sends calls (default: sip:<public_host>:<sip_port>, "
        "with ;transport=tls when --secure)",
    )
    setup.add_argument("--priority", type=int, default=10, help="origination priority (10)")
    setup.add_argument("--weight", type=int, default=10, help="origination weight (10)")
    setup.add_argument(
        "--acl-cidr",
        action="append",
        metavar="CIDR",
        help="IPv4 address/range allowed to send calls into the trunk; repeatable "
        "(default: the public host /32)",
    )
    setup.add_argument("--credential-user", help="user of the trunk's credential list")
    setup.add_argument("--credential-password", help="that user's password")
    setup.add_argument(
        "--secure", action="store_true", help="Secure Trunking: TLS signalling, SRTP media"
    )
    setup.add_argument(
        "--dry-run", action="store_true", help="print the API requests, send nothing"
    )
    setup.add_argument("--account-sid", help="default: $TWILIO_ACCOUNT_SID")
    setup.add_argument("--auth-token", help="default: $TWILIO_AUTH_TOKEN")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sipagent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="answer calls (echo model unless configured)")
    run_parser.add_argument("--config", help="TOML settings file (default: config/*.toml)")
    _add_twilio_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "twilio":
        from . import twilio_setup

        return twilio_setup.setup_command(args)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"sipagent: configuration error: {exc}", file=sys.stderr)
        return 2
    _mask_secrets(settings)
    configure_logging(settings.log_level, settings.log_format)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    else:
        runner = uvloop.run
    from admin.server import AdminStartupError

    try:
        runner(run(settings))
    except ConfigError as exc:  # found at start-up, e.g. an unreachable database
        print(f"sipagent: configuration error: {exc}", file=sys.stderr)
        return 2
    except (OSError, AdminStartupError) as exc:
        print(f"sipagent: cannot start: {exc}", file=sys.stderr)
        return 1
    except asyncio.CancelledError:
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
