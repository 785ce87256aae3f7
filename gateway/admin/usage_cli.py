"""`gateway usage`: the usage ledger through `GET /admin/v1/usage`, as a table, JSON or CSV.

The admin URL and key come from `--admin-url`/`--admin-key`, else `GATEWAY_ADMIN_URL`/
`GATEWAY_ADMIN_KEY`; the key is sent as a Bearer token and never printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Any, Final

import httpx

from gateway.admin.cli import CommandError, checked_admin_key, unreachable

FIELDS: Final = ("requests", "input_tokens", "output_tokens", "cost_usd", "errors")
TIMEOUT_S: Final = 30.0
URL_ENV: Final = "GATEWAY_ADMIN_URL"
KEY_ENV: Final = "GATEWAY_ADMIN_KEY"


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    usage = commands.add_parser("usage", help="requests, tokens, cost and errors per day, key, team or model")
    usage.add_argument("--from", dest="from_", metavar="YYYY-MM-DD", help="first UTC day (default: today)")
    usage.add_argument("--to", metavar="YYYY-MM-DD", help="last UTC day, inclusive (default: today)")
    usage.add_argument("--key", help="only this key id")
    usage.add_argument("--team", help="only this team")
    usage.add_argument("--model", help="only this public model")
    usage.add_argument("--group-by", choices=("day", "key", "team", "model"), default="day")
    output = usage.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="the API's JSON answer")
    output.add_argument("--csv", action="store_true", help="one CSV line per row, with a header")
    usage.add_argument("--admin-url", help=f"the gateway's admin URL (default: ${URL_ENV})")
    usage.add_argument("--admin-key", help=f"the admin key (default: ${KEY_ENV})")


def run(args: argparse.Namespace) -> int:
    url = (args.admin_url or os.environ.get(URL_ENV, "")).rstrip("/")
    key = args.admin_key or os.environ.get(KEY_ENV, "")
    if not url or not key:
        print(
            f"gateway usage: set --admin-url and --admin-key (or ${URL_ENV} and ${KEY_ENV})", file=sys.stderr
        )
        return 2
    try:
        key = checked_admin_key(key)
    except CommandError as exc:
        print(f"gateway usage: {exc}", file=sys.stderr)
        return 1
    params = {
        name: value
        for name, value in (
            ("from", args.from_),
            ("to", args.to),
            ("key", args.key),
            ("team", args.team),
            ("model", args.model),
            ("group_by", args.group_by),
        )
        if value is not None
    }
    try:
        response = httpx.get(
            url + "/admin/v1/usage",
            params=params,
            headers={"Authorization": f"Bearer {key}"},
            timeout=TIMEOUT_S,
        )
    except httpx.InvalidURL as exc:  # its message names the part at fault, never the URL's password
        print(f"gateway usage: invalid admin URL: {exc}", file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:
        print(f"gateway usage: {unreachable(httpx.URL(url), exc)}", file=sys.stderr)
        return 1
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200:
        error = body.get("error") if isinstance(body.get("error"), dict) else None
        message = error.get("message") if error else response.text[:200]
        print(f"gateway usage: {response.status_code}: {message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, indent=2))
    elif args.csv:
        write_csv(body)
    else:
        print(table(body))
    return 0


def _cell(name: str, value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.6f}" if name == "cost_usd" else str(value)


def write_csv(body: dict[str, Any]) -> None:
    group = body["group_by"]
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow((group, *FIELDS))
    for row in body["data"]:
        writer.writerow((row[group] if row[group] is not None else "", *(_cell(f, row[f]) for f in FIELDS)))


def table(body: dict[str, Any]) -> str:
    group = body["group_by"]
    rows = [[_cell(group, row[group]), *(_cell(f, row[f]) for f in FIELDS)] for row in body["data"]]
    rows.append(["total", *(_cell(f, body["totals"][f]) for f in FIELDS)])
    header = [group, *FIELDS]
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in [header, *rows]
    ]
    title = f"Usage {body['from']} .. {body['to']} (UTC), by {group}"
    return "\n".join([*lines[:1], *lines[1:-1], "-" * len(lines[0]), lines[-1], "", title])


__all__ = ("add_command", "run", "table", "write_csv")
