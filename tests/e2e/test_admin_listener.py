"""The admin listener (`admin: {listen, key}`): a real `gateway serve` process, one and two workers.

With `admin.listen` the admin API and `/metrics` are served on that listener only; the public one
answers 404 for them in OpenAI's envelope. Without `listen` the admin API is on the public listener.
The admin key is required (401 without it or with a wrong one) and never appears in the output
(`GatewayProcess.stop` scans it for every configured secret).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.emulators.server import free_port
from tests.gateway_process import GatewayProcess

ADMIN_KEY = "admin-key-for-tests-0123456789"
MOCK_CONFIG: dict[str, Any] = {
    "backends": {"demo": {"kind": "mock"}},
    "models": {"m": {"targets": [{"backend": "demo", "model": "x"}]}},
}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.mark.parametrize("workers", [1, 2])
def test_the_admin_api_and_metrics_are_served_on_the_admin_listener_only(
    tmp_path: Path, workers: int
) -> None:
    admin_port = free_port()
    config = {**MOCK_CONFIG, "admin": {"listen": {"host": "127.0.0.1", "port": admin_port}, "key": ADMIN_KEY}}
    with GatewayProcess(config, tmp_path, workers=workers) as gateway:
        admin_url = f"http://127.0.0.1:{admin_port}"
        for path in ("/admin/v1/ping", "/metrics", "/admin/v1/keys"):
            public = httpx.get(gateway.url + path, headers=ADMIN)
            assert public.status_code == 404, path
            assert public.json()["error"]["message"] == f"Invalid URL (GET {path})"
        assert httpx.get(gateway.url + "/v1/models").status_code == 200
        assert httpx.get(admin_url + "/admin/v1/ping", headers=ADMIN).json() == {"status": "ok"}
        assert httpx.get(admin_url + "/metrics").status_code == 200
        assert httpx.get(admin_url + "/readyz").status_code == 200
        assert httpx.get(admin_url + "/v1/models").status_code == 404


def test_the_admin_key_is_required_and_never_echoed(tmp_path: Path) -> None:
    config = {**MOCK_CONFIG, "admin": {"key": ADMIN_KEY}}
    with GatewayProcess(config, tmp_path) as gateway:
        url = gateway.url + "/admin/v1/ping"
        missing = httpx.get(url)
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "invalid_api_key"
        wrong = httpx.get(url, headers={"Authorization": f"Bearer {ADMIN_KEY}x"})
        assert wrong.status_code == 401
        assert ADMIN_KEY not in wrong.text
        assert httpx.get(url, headers=ADMIN).status_code == 200
        # Without a separate listener /metrics stays on the public one.
        assert httpx.get(gateway.url + "/metrics").status_code == 200
    assert ADMIN_KEY not in gateway.output()


def test_without_an_admin_section_there_is_no_admin_api(tmp_path: Path) -> None:
    with GatewayProcess(MOCK_CONFIG, tmp_path) as gateway:
        assert httpx.get(gateway.url + "/admin/v1/ping", headers=ADMIN).status_code == 404
        assert httpx.get(gateway.url + "/metrics").status_code == 200
