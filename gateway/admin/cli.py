"""`gateway keys ...` and `gateway teams ...`: the control plane's commands, on the admin API.

`gateway keys hash [KEY]` prints the SHA-256 of a key (the argument, else standard input without its
trailing newline) as the 64 hex digits `key_sha256` takes in a config file; it needs no gateway.

The others call a running gateway's admin API (`/admin/v1/keys`, `/admin/v1/teams`), at
`--admin-url` (else `$GATEWAY_ADMIN_URL`) with `--admin-key` (else `$GATEWAY_ADMIN_KEY`). They print
a table by default and the API's JSON with `--json`; an error prints the API's message on standard
error and exits with 1 (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

if TYPE_CHECKING:
    import httpx

URL_ENV: Final = "GATEWAY_ADMIN_URL"
KEY_ENV: Final = "GATEWAY_ADMIN_KEY"
TIMEOUT_S: Final = 10.0
LIMITS: Final = ("rpm", "tpm", "max_concurrency")
KEY_COLUMNS: Final = ("id", "team", "models", *LIMITS, "budget", "expires_at", "secret_hint", "created_at")
TEAM_COLUMNS: Final = ("id", *LIMITS, "budget", "created_at")


class CommandError(Exception):
    """What went wrong, for standard error (never the admin key)."""


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--admin-url", help=f"the gateway's admin base URL (default: ${URL_ENV})")
    common.add_argument("--admin-key", help=f"the admin key (default: ${KEY_ENV})")
    common.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")

    keys = commands.add_parser("keys", help="client API keys")
    actions = keys.add_subparsers(dest="action", required=True)
    hash_ = actions.add_parser("hash", help="print the sha256 of a key, for key_sha256 in a config file")
    hash_.add_argument("key", nargs="?", help="the key (default: read from standard input)")
    create = actions.add_parser("create", parents=[common], help="make a key (its secret is shown once)")
    create.add_argument("id")
    _key_options(create)
    actions.add_parser("list", parents=[common], help="list the API-made keys (never their secrets)")
    for name, text in (
        ("show", "show one key"),
        ("revoke", "revoke a key (refused everywhere within a second)"),
    ):
        actions.add_parser(name, parents=[common], help=text).add_argument("id")
    update = actions.add_parser("update", parents=[common], help="change a key's team, models or limits")
    update.add_argument("id")
    _key_options(update)
    _clear_option(update, ("team", *LIMITS, "budget", "expires_at", "metadata"))
    rotate = actions.add_parser("rotate", parents=[common], help="give a key a new secret")
    rotate.add_argument("id")
    rotate.add_argument(
        "--grace-s", type=int, help="seconds the old secret keeps working (default 3600; 0: stops at once)"
    )

    teams = commands.add_parser("teams", help="teams: limits and budgets shared by their keys")
    team_actions = teams.add_subparsers(dest="action", required=True)
    team_create = team_actions.add_parser("create", parents=[common], help="make a team")
    team_create.add_argument("id")
    _limit_options(team_create)
    team_actions.add_parser("list", parents=[common], help="list the teams")
    team_actions.add_parser("show", parents=[common], help="show one team").add_argument("id")
    team_update = team_actions.add_parser("update", parents=[common], help="change a team's limits")
    team_update.add_argument("id")
    _limit_options(team_update)
    _clear_option(team_update, (*LIMITS, "budget", "metadata"))
    team_delete = team_actions.add_parser("delete", parents=[common], help="delete a team")
    team_delete.add_argument("id")
    team_delete.add_argument("--force", action="store_true", help="revoke the team's keys too")


def _limit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpm", type=int, help="requests per minute")
    parser.add_argument("--tpm", type=int, help="tokens per minute")
    parser.add_argument("--max-concurrency", type=int, help="requests in flight at once")
    parser.add_argument("--budget-usd", type=float, help="spend cap in USD per period (with --budget-period)")
    parser.add_argument("--budget-period", choices=("day", "week", "month"), help="the budget's period")
    parser.add_argument("--metadata", action="append", metavar="NAME=VALUE", help="a label (repeatable)")


def _key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--team", help="the team the key belongs to (its limits apply too)")
    parser.add_argument(
        "--model", action="append", dest="models", help="a model it may use (repeatable; default all)"
    )
    parser.add_argument("--expires-at", help="RFC 3339 time with an offset, e.g. 2027-01-01T00:00:00Z")
    _limit_options(parser)


def _clear_option(parser: argparse.ArgumentParser, fields: Sequence[str]) -> None:
    parser.add_argument(
        "--clear", action="append", default=[], choices=fields, help="remove a setting (repeatable)"
    )


def run(args: argparse.Namespace) -> int:
    if args.command == "keys" and args.action == "hash":
        return hash_key(args.key)
    command = f"gateway {args.command} {args.action}"
    try:
        client = _client(args)
        with client:
            return _ACTIONS[args.command, args.action](client, args)
    except CommandError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 1


def hash_key(key: str | None) -> int:
    if key is None:
        key = sys.stdin.readline().rstrip("\r\n")
    if not key.strip():
        print(
            "gateway keys hash: no key given (pass it as an argument or on standard input)", file=sys.stderr
        )
        return 1
    if key != key.strip():
        print("gateway keys hash: the key starts or ends with whitespace", file=sys.stderr)
        return 1
    print(hashlib.sha256(key.encode()).hexdigest())
    return 0


class _Api:
    """The admin API over httpx; every answer but a 2xx becomes a `CommandError`."""

    def __init__(self, url: str, key: str, as_json: bool) -> None:
        import httpx

        self.as_json = as_json
        self._httpx = httpx
        self._client = httpx.Client(
            base_url=url.rstrip("/") + "/admin/v1",
            headers={"Authorization": f"Bearer {key}"},
            timeout=TIMEOUT_S,
        )

    def __enter__(self) -> _Api:
        return self

    def __exit__(self, *_: object) -> None:
        self._client.close()

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, params: dict[str, str] | None = None
    ) -> Any:
        try:
            response = self._client.request(method, path, json=body, params=params)
        except self._httpx.HTTPError as exc:
            raise CommandError(unreachable(self._client.base_url, exc)) from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.is_success:
            return answer
        error = answer.get("error") if isinstance(answer, dict) else None
        if isinstance(error, dict) and "message" in error:
            code = f" {error['code']}" if error.get("code") else ""
            raise CommandError(f"HTTP {response.status_code}{code}: {error['message']}")
        raise CommandError(f"HTTP {response.status_code} from {response.request.url.path}")


def _client(args: argparse.Namespace) -> _Api:
    url = args.admin_url or os.environ.get(URL_ENV, "")
    key = args.admin_key or os.environ.get(KEY_ENV, "")
    if not url:
        raise CommandError(f"no admin URL: pass --admin-url or set ${URL_ENV} (e.g. http://127.0.0.1:9090)")
    if not key:
        raise CommandError(f"no admin key: pass --admin-key or set ${KEY_ENV}")
    import httpx  # here, not at the top: `gateway keys hash` starts without it

    try:
        return _Api(url, checked_admin_key(key), args.json)
    except httpx.InvalidURL as exc:  # its message names the part at fault, never the URL's password
        raise CommandError(f"invalid admin URL: {exc}") from None


def checked_admin_key(key: str) -> str:
    """The key as a header value: stripped (a key read from a file keeps its newline; the gateway
    strips it too), and refused, never echoed, if it still holds what a header cannot (httpx's own
    error for an illegal header value would print it whole).

    Raises:
        CommandError: spaces, control or non-ASCII characters in the key.
    """
    key = key.strip()
    if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        raise CommandError("the admin key holds spaces, control or non-ASCII characters: check its source")
    return key


def shown_url(url: httpx.URL) -> str:
    """The URL for an error message, without a password it may carry."""
    return str(url.copy_with(username=None, password=None))


def unreachable(url: httpx.URL, exc: Exception) -> str:
    """Why the gateway at `url` could not be reached, without the URL's password."""
    detail = str(exc).replace(url.password, "***") if url.password else str(exc)
    return f"cannot reach the gateway at {shown_url(url)}: {detail}"


def _fields(args: argparse.Namespace, *, creating: bool) -> dict[str, Any]:
    """The request body the options ask for (`--clear` fields as null)."""
    body: dict[str, Any] = {name: None for name in getattr(args, "clear", [])}
    for name in ("team", "models", "expires_at", *LIMITS):
        value = getattr(args, name, None)
        if value is not None:
            body[name] = value
    if (args.budget_usd is None) != (args.budget_period is None):
        raise CommandError("a budget needs both --budget-usd and --budget-period")
    if args.budget_usd is not None:
        body["budget"] = {"usd": args.budget_usd, "period": args.budget_period}
    if args.metadata:
        pairs = [item.partition("=") for item in args.metadata]
        if any(not sep or not name for name, sep, _ in pairs):
            raise CommandError("--metadata takes NAME=VALUE")
        body["metadata"] = {name: value for name, _, value in pairs}
    if creating:
        body["id"] = args.id
    elif not body:
        raise CommandError("nothing to change: give at least one option (see --help)")
    return body


def _show(api: _Api, answer: Any, columns: Sequence[str], *, secret: str | None = None) -> int:
    if api.as_json:
        print(json.dumps(answer, indent=2))
        return 0
    if secret is not None:
        print(f"secret: {secret}")
        print("(shown once: store it now, the gateway keeps only its hash)\n")
    if isinstance(answer, dict) and answer.get("object") == "list":
        rows = answer["data"]
        print(table(rows, columns) if rows else "(none)")
    else:
        width = max(len(name) for name in answer)
        for name, value in answer.items():
            print(f"{name:<{width}}  {_cell(value)}")
    return 0


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[_cell(row.get(name)) for name in columns] for row in rows]
    widths = [max(len(name), *(len(row[i]) for row in cells)) for i, name in enumerate(columns)]
    lines = ["  ".join(name.upper().ljust(w) for name, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None or value == {}:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        if set(value) == {"usd", "period"}:
            return f"${value['usd']:g}/{value['period']}"
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _created(api: _Api, answer: Any) -> int:
    if api.as_json:
        return _show(api, answer, KEY_COLUMNS)
    return _show(api, answer["key"], KEY_COLUMNS, secret=answer["secret"])


def _deleted(api: _Api, answer: Any, what: str) -> int:
    if api.as_json:
        return _show(api, answer, ())
    print(f"{what} {answer['id']}: deleted")
    for key_id in answer.get("revoked_keys", []):
        print(f"key {key_id}: revoked")
    return 0


def _segment(item_id: str) -> str:
    """An id as one URL path segment: `/`, `..`, `?` or `#` in it must not reach another route."""
    return quote(item_id, safe="")


Action = Callable[[_Api, argparse.Namespace], int]
_ACTIONS: Final[dict[tuple[str, str], Action]] = {
    ("keys", "create"): lambda api, a: _created(api, api.call("POST", "/keys", _fields(a, creating=True))),
    ("keys", "list"): lambda api, a: _show(api, api.call("GET", "/keys"), KEY_COLUMNS),
    ("keys", "show"): lambda api, a: _show(api, api.call("GET", f"/keys/{_segment(a.id)}"), KEY_COLUMNS),
    ("keys", "update"): lambda api, a: _show(
        api, api.call("PATCH", f"/keys/{_segment(a.id)}", _fields(a, creating=False)), KEY_COLUMNS
    ),
    ("keys", "rotate"): lambda api, a: _created(
        api,
        api.call(
            "POST", f"/keys/{_segment(a.id)}/rotate", {} if a.grace_s is None else {"grace_s": a.grace_s}
        ),
    ),
    ("keys", "revoke"): lambda api, a: _deleted(api, api.call("DELETE", f"/keys/{_segment(a.id)}"), "key"),
    ("teams", "create"): lambda api, a: _show(api, api.call("POST", "/teams", _fields(a, creating=True)), ()),
    ("teams", "list"): lambda api, a: _show(api, api.call("GET", "/teams"), TEAM_COLUMNS),
    ("teams", "show"): lambda api, a: _show(api, api.call("GET", f"/teams/{_segment(a.id)}"), ()),
    ("teams", "update"): lambda api, a: _show(
        api, api.call("PATCH", f"/teams/{_segment(a.id)}", _fields(a, creating=False)), ()
    ),
    ("teams", "delete"): lambda api, a: _deleted(
        api,
        api.call("DELETE", f"/teams/{_segment(a.id)}", params={"force": "true"} if a.force else None),
        "team",
    ),
}

__all__ = ("add_commands", "checked_admin_key", "hash_key", "run", "table", "unreachable")
