"""nginx as a plain reverse proxy: the anchor row of `make bench` and `make bench-compare`.

What a proxy written in C costs on the same core, in the same run, for the same requests: one
worker (`master_process off`, so the pid we measure is the process doing the work), upstream
keep-alive, HTTP/1.1 to the upstream with the `Connection` header cleared (or nginx closes every
upstream connection), and response buffering off so SSE events go out as they arrive. It runs
from a temporary prefix with a generated configuration and never touches the system's nginx.
"""

from __future__ import annotations

import shutil
from pathlib import Path

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_config(prefix: Path, *, port: int, upstream: str) -> str:
    upstream_host_port = upstream.split("//", 1)[1].rstrip("/")
    return f"""
worker_processes 1;
master_process off;
daemon off;
pid {prefix}/nginx.pid;
error_log stderr warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 20000; }}
http {{
    access_log {prefix}/access.log combined buffer=64k flush=1s;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    upstream emulator {{
        server {upstream_host_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://emulator;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def nginx_command(workdir: Path, upstream: str, *, port: int, name: str = "nginx") -> list[str]:
    """The command running nginx on `port` in front of `upstream`, from a prefix under `workdir`."""
    prefix = workdir / name
    prefix.mkdir(parents=True, exist_ok=True)
    config = prefix / "nginx.conf"
    config.write_text(nginx_config(prefix, port=port, upstream=upstream))
    return [NGINX, "-p", str(prefix), "-c", str(config), "-e", "stderr"]
