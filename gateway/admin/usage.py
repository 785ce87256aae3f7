"""`GET /admin/v1/usage`: the usage ledger's counters, filtered and grouped; and today's usage per key
and team for the status page.

Figures are read from the store: with Redis, every replica's counters as last flushed (so other
replicas' traffic shows up to `usage.flush_interval_s` late; this process writes its own pending
counters first); without, this process's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

import msgspec
from litestar import Request, Response, get

from gateway.errors import InvalidRequestError, ServiceUnavailableError
from gateway.limits.base import MICRO_USD
from gateway.usage.ledger import (
    FIELDS,
    Counts,
    Match,
    Row,
    add_counts,
    day_name,
    day_number,
    day_of,
)

if TYPE_CHECKING:
    from litestar.types import ControllerRouterHandler

    from gateway.app import Gateway
    from gateway.usage.ledger import UsageLedger

GroupBy = Literal["day", "key", "team", "model"]
GROUPS: Final[tuple[str, ...]] = get_args(GroupBy)
MAX_RANGE_DAYS: Final = 400
"""The longest `from`..`to` range one query may span."""
PARAMS: Final = frozenset({"key", "team", "model", "from", "to", "group_by"})
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_encoder: Final = msgspec.json.Encoder()


class UsageQuery(msgspec.Struct, frozen=True, kw_only=True):
    first_day: int
    last_day: int
    group_by: GroupBy
    match: Match


def parse_query(params: Mapping[str, str], today: int) -> UsageQuery:
    """The query's parameters, checked; raises InvalidRequestError naming the parameter at fault."""
    for name in params:
        if name not in PARAMS:
            raise InvalidRequestError(
                f"Unknown parameter '{name}'; expected one of {', '.join(sorted(PARAMS))}", param=name
            )
    first = _day_param(params, "from", today)
    last = _day_param(params, "to", today)
    if last < first:
        raise InvalidRequestError(f"'to' ({day_name(last)}) is before 'from' ({day_name(first)})", param="to")
    if last - first + 1 > MAX_RANGE_DAYS:
        raise InvalidRequestError(f"The range spans more than {MAX_RANGE_DAYS} days", param="from")
    group_by = params.get("group_by", "day")
    if group_by not in GROUPS:
        raise InvalidRequestError(
            f"Invalid group_by '{group_by}'; expected one of {', '.join(GROUPS)}", param="group_by"
        )
    match = Match(key=params.get("key"), team=params.get("team"), model=params.get("model"))
    return UsageQuery(first_day=first, last_day=last, group_by=group_by, match=match)  # type: ignore[arg-type]


def _day_param(params: Mapping[str, str], name: str, today: int) -> int:
    value = params.get(name)
    if value is None:
        return today
    try:
        if not _DATE.fullmatch(value):
            raise ValueError(value)
        return day_of(value)
    except ValueError:
        raise InvalidRequestError(
            f"Invalid '{name}' date {value[:40]!r}; expected YYYY-MM-DD (UTC)", param=name
        ) from None


def figures(counts: Counts) -> dict[str, Any]:
    """The five counters as the API shows them: cost in USD instead of micro-USD."""
    requests, input_tokens, output_tokens, cost, errors = counts
    return {
        "requests": requests,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost_usd": cost / MICRO_USD,
        "errors": errors,
    }


def group_rows(rows: Mapping[Row, Counts], group_by: GroupBy) -> dict[str | None, Counts]:
    groups: dict[str | None, Counts] = {}
    for row, counts in rows.items():
        name = day_name(row.day) if group_by == "day" else getattr(row, group_by)
        add_counts(groups.setdefault(name, [0] * len(FIELDS)), counts)
    return groups


def usage_body(query: UsageQuery, rows: Mapping[Row, Counts], source: str) -> dict[str, Any]:
    groups = group_rows(rows, query.group_by)
    total = [0] * len(FIELDS)
    for counts in groups.values():
        add_counts(total, counts)
    # Sorted by name, None (no key, no team) first.
    names = sorted(groups, key=lambda name: (name is not None, name or ""))
    return {
        "object": "usage",
        "from": day_name(query.first_day),
        "to": day_name(query.last_day),
        "group_by": query.group_by,
        "source": source,
        "data": [{query.group_by: name, **figures(groups[name])} for name in names],
        "totals": figures(total),
    }


async def read_rows(ledger: UsageLedger, query: UsageQuery) -> dict[Row, Counts]:
    try:
        return await ledger.read(query.first_day, query.last_day, query.match)
    except Exception as exc:  # noqa: BLE001 - redis-py also raises non-Redis errors on broken sockets
        raise ServiceUnavailableError(
            f"The usage store could not be read ({type(exc).__name__}); try again", code="usage_unavailable"
        ) from None


class TodayUsage:
    """Today's counters per key and per team, read at most once per flush interval (the status page
    polls every 2 s, perhaps from several tabs)."""

    __slots__ = ("_by_key", "_by_team", "_ledger", "_max_age_s", "_read_at")

    def __init__(self, ledger: UsageLedger, max_age_s: float) -> None:
        self._ledger = ledger
        self._max_age_s = max_age_s
        self._read_at = -max_age_s
        self._by_key: dict[str | None, Counts] = {}
        self._by_team: dict[str | None, Counts] = {}

    async def refresh(self) -> bool:
        """Read again if stale; False when the store cannot be read (the last figures stay)."""
        now = time.monotonic()
        if now - self._read_at < self._max_age_s:
            return True
        today = day_number(time.time())
        try:
            rows = await self._ledger.read(today, today, Match())
        except Exception:  # noqa: BLE001 - shown as unavailable on the page
            return False
        self._by_key = group_rows(rows, "key")
        self._by_team = group_rows(rows, "team")
        self._read_at = now
        return True

    def of_key(self, key_id: str) -> dict[str, Any]:
        """A key's figures today (zeros when it has none)."""
        return figures(self._by_key.get(key_id, [0] * len(FIELDS)))

    def of_team(self, team_id: str) -> dict[str, Any]:
        return figures(self._by_team.get(team_id, [0] * len(FIELDS)))


def api_routes(gateway: Gateway) -> list[ControllerRouterHandler]:
    """Under `/admin/v1`, behind the admin key."""

    @get("/usage", name="admin_usage")
    async def usage(request: Request[Any, Any, Any]) -> Response[bytes]:
        """The ledger's counters, filtered and grouped (docs/control-plane.md#usage)."""
        params = {name: request.query_params[name] for name in request.query_params}
        query = parse_query(params, day_number(time.time()))
        rows = await read_rows(gateway.usage, query)
        body = _encoder.encode(usage_body(query, rows, gateway.usage.source))
        return Response(body, media_type="application/json", headers={"cache-control": "no-store"})

    return [usage]


__all__ = (
    "MAX_RANGE_DAYS",
    "TodayUsage",
    "UsageQuery",
    "api_routes",
    "figures",
    "group_rows",
    "parse_query",
    "usage_body",
)
