"""`gateway serve`, `check-config`, `config-schema`, `keys` and `teams` (in `gateway.admin.cli`) and
`usage` (in `gateway.admin.usage_cli`)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from gateway.admin import cli as admin_cli
from gateway.admin import usage_cli
from gateway.admin.reload import SUPERVISOR_ENV
from gateway.config import ConfigError, LoadedConfig, default_config_path, load_config
from gateway.observability.logs import configure_logging, get_logger

CONFIG_ENV = "GATEWAY_CONFIG"
SERVER_OPTIONS: dict[str, Any] = {
    "log_level": "warning",
    "access_log": False,  # the gateway writes its own line per request
    # The gateway uses neither the forwarded client address nor a Server banner: both cost time per request.
    "proxy_headers": False,
    "server_header": False,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description="OpenAI-compatible LLM gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help=f"config file (default: ${CONFIG_ENV}, else config/gateway.yaml)")
    serve.add_argument("--host", help="listen address (default: listen.host from the config)")
    serve.add_argument("--port", type=int, help="listen port (default: listen.port from the config)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    check = commands.add_parser("check-config", help="validate a config file: prints 'ok' or every problem")
    check.add_argument("path")
    schema = commands.add_parser(
        "config-schema", help="write the config's JSON Schema (for editors' completion and checks)"
    )
    schema.add_argument("--output", "-o", help="file to write (default: standard output)")
    admin_cli.add_commands(commands)
    usage_cli.add_command(commands)
    args = parser.parse_args(argv)
    if args.command in ("keys", "teams"):
        return admin_cli.run(args)
    if args.command == "usage":
        return usage_cli.run(args)
    if args.command == "check-config":
        return check_config(args.path)
    if args.command == "config-schema":
        return config_schema(args.output)
    return run_server(
        args.config or default_config_path(), host=args.host, port=args.port, workers=args.workers
    )


def check_config(path: str) -> int:
    try:
        load_config(path)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    print("ok")
    return 0


def config_schema(output: str | None) -> int:
    """The JSON Schema editors use: `# yaml-language-server: $schema=<file>` at the top of a config."""
    from gateway.config_reference import schema_text

    text = schema_text()
    if output is None:
        sys.stdout.write(text)
        return 0
    try:
        with open(output, "w", encoding="utf-8") as file:
            file.write(text)
    except OSError as exc:
        print(f"{output}: cannot write the schema: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _load_or_exit(path: str) -> LoadedConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        raise SystemExit(1) from None


def run_server(path: str, *, host: str | None, port: int | None, workers: int) -> int:
    import uvicorn

    from gateway.edge.server import BoundedHeadProtocol

    loaded = _load_or_exit(path)
    settings = loaded.settings
    BoundedHeadProtocol.configure(settings.http)
    configure_logging(settings.log_level, settings.log_format)
    # Until the app's lifespan handles it (a reload), a SIGHUP must not end the process (the default).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    log = get_logger("gateway")
    for notice in loaded.notices:
        log.warning("config_notice", message=notice)
    # In-flight requests and streams get this long after SIGTERM (uvicorn's default waits forever).
    options = {**SERVER_OPTIONS, "timeout_graceful_shutdown": settings.http.shutdown_grace_s}
    bind_host = host or settings.listen.host
    bind_port = port if port is not None else settings.listen.port
    log.info("starting", host=bind_host, port=bind_port, workers=workers, config=path)
    if workers > 1 and not settings.redis_url.strip():
        log.warning(
            "rate_limits_per_worker",
            message=f"no redis_url: each of the {workers} workers counts rate limits on its own, so up to "
            f"{workers}x the configured rates get through; set redis_url for exact limits",
        )
    sockets = [_bind(bind_host, bind_port)]
    admin = settings.admin
    if admin is not None and admin.listen is not None:
        if admin.listen.port == bind_port:
            print(f"admin.listen.port: {bind_port} is also the public port; pick another", file=sys.stderr)
            return 1
        # One server, two sockets: each worker serves both, `gateway.admin.listener` tells them apart.
        sockets.append(_bind(admin.listen.host, admin.listen.port))
        log.info("admin_listener", host=admin.listen.host, port=admin.listen.port)
    app: Any
    if workers > 1:
        # Worker processes import the app by name: hand them the config path through the environment.
        os.environ[CONFIG_ENV] = os.path.abspath(path)
        # Metrics from every worker, whichever one a scrape reaches: prometheus multiprocess mode.
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")
        app = "gateway.cli:app_from_environment"
        # Lets a worker answering `POST /admin/v1/reload` have this process reload the others.
        os.environ[SUPERVISOR_ENV] = str(os.getpid())
    else:
        from gateway.app import create_app

        # uvicorn re-raises SIGTERM once its graceful shutdown is over, to whatever handler was there
        # before it: make that a clean exit (status 0) rather than "killed by SIGTERM" (143).
        signal.signal(signal.SIGTERM, _exit_cleanly)
        app = create_app(settings, os.path.abspath(path))
    config = uvicorn.Config(
        app,
        factory=workers > 1,
        workers=workers,
        host=bind_host,
        port=bind_port,
        http=BoundedHeadProtocol,
        **options,
    )
    server = uvicorn.Server(config)
    try:
        if workers > 1:
            _supervisor()(config, sockets=sockets).run()
        else:
            server.run(sockets=sockets)
    except KeyboardInterrupt:
        pass
    if workers == 1 and not server.started:
        return 3  # uvicorn's STARTUP_FAILURE: the app's lifespan failed
    return 0


def _supervisor() -> type[Any]:
    """uvicorn's `Multiprocess`, except that `SIGHUP` reloads the config in every worker.

    uvicorn's own `SIGHUP` restarts the workers one after the other, which drops their state
    (breakers, hedging figures, per-process limits) and the in-process stored Responses: a reload
    keeps them. The signal is passed on to every worker that has finished starting (a worker still
    starting reads the file as it is when its app is built, and may not handle the signal yet).
    """
    from uvicorn.supervisors import Multiprocess

    class ReloadingMultiprocess(Multiprocess):
        def handle_hup(self) -> None:
            log = get_logger("gateway")
            signalled = []
            for process in self.processes:
                if process.pid is not None and process.is_ready(timeout=1):
                    os.kill(process.pid, signal.SIGHUP)
                    signalled.append(process.pid)
            log.info("config_reload_signalled", worker_pids=signalled)

    return ReloadingMultiprocess


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound as uvicorn binds its own (it is shared by the worker processes)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        print(f"cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(1) from None
    sock.set_inheritable(True)
    return sock


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def app_from_environment() -> object:
    """The factory worker processes call: config from `$GATEWAY_CONFIG`, already validated by the parent."""
    from gateway.app import create_app
    from gateway.edge.server import BoundedHeadProtocol

    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as in `run_server`: until the lifespan handles it
    path = default_config_path()
    settings = _load_or_exit(path).settings
    configure_logging(settings.log_level, settings.log_format)
    BoundedHeadProtocol.configure(settings.http)  # this worker's connections use the config's bounds
    return create_app(settings, path)


__all__ = ("app_from_environment", "check_config", "config_schema", "main", "run_server")
