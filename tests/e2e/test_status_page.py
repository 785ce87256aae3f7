"""The status page in a real headless Chromium (Debian's `chromium`, driven by Playwright).

A real gateway process with an admin listener in front of both emulators; the vLLM target is made to
fail once, which trips its breaker (threshold 1), and the page must show it open and the Workers AI
target closed. A wrong admin key shows the refusal; the right one is kept in sessionStorage only.
The screenshot is kept in `.artifacts/status-page.png` (listed in .gitignore).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, expect, sync_playwright

from tests.e2e.conftest import VLLM_MODEL, cloudflare_backend, vllm_backend
from tests.emulators.server import free_port
from tests.gateway_process import ROOT, GatewayProcess
from tests.waiting import wait_for

if TYPE_CHECKING:
    from tests.emulators.vllm import VLLMEmulator
    from tests.emulators.workers_ai import WorkersAIEmulator

ADMIN_KEY = "admin-status-test-4c1e9b7a"
CLIENT_KEY = "sk-status-test-client-0b3d"
CLIENT = {"Authorization": f"Bearer {CLIENT_KEY}"}
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / ".artifacts"
TRIP_ONCE: dict[str, Any] = {"failure_threshold": 1, "cooldown_s": 600, "health_interval_s": 3600}
CF_MODEL = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
HANG_GUARD_MS = 30_000


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    with sync_playwright() as playwright:
        # A fresh profile per test: nothing carried over (storage, cache) from another run.
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
        )
        # Generous hang guards, not speed limits: Chromium on a busy 2-core machine can be slow.
        context.set_default_timeout(HANG_GUARD_MS)
        expect.set_options(timeout=HANG_GUARD_MS)
        yield context
        context.close()


def test_status_page_shows_a_tripped_breaker(
    tmp_path: Path,
    workers_ai: WorkersAIEmulator,
    vllm: VLLMEmulator,
    browser: BrowserContext,
    workers_ai_server: Any,
    vllm_server: Any,
) -> None:
    admin_port = free_port()
    config = {
        "backends": {
            "vllm": vllm_backend(vllm_server[1].url, breaker=TRIP_ONCE),
            "cloudflare": cloudflare_backend(workers_ai_server[1].url, breaker=TRIP_ONCE),
        },
        "models": {
            "chat": {
                "targets": [
                    {"backend": "vllm", "model": VLLM_MODEL},
                    {"backend": "cloudflare", "model": CF_MODEL},
                ],
                # $0.001 per output token: the budget's spend is the completion tokens / 1000.
                "price": {"input_per_mtok": 0, "output_per_mtok": 1000},
            }
        },
        "keys": [
            {
                "id": "team-a",
                "key": CLIENT_KEY,
                "rpm": 600,
                "models": ["chat"],
                "budget": {"usd": 5, "period": "month"},
            }
        ],
        "admin": {"listen": {"host": "127.0.0.1", "port": admin_port}, "key": ADMIN_KEY},
    }
    admin_url = f"http://127.0.0.1:{admin_port}"
    with GatewayProcess(config, tmp_path) as gateway:
        vllm.faults.push("status:500")
        answer = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
            headers=CLIENT,
            timeout=30,
        )
        assert answer.status_code == 200, answer.text  # failed over to Workers AI

        status = httpx.get(f"{admin_url}/admin/v1/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert status.status_code == 200
        targets = {t["backend"]: t for t in status.json()["models"][0]["targets"]}
        assert targets["vllm"]["breaker"] == "open"
        assert targets["cloudflare"]["breaker"] == "closed"
        assert targets["vllm"]["recent"]["errors"] == 1
        assert targets["cloudflare"]["recent"]["requests"] == 1
        # Today's usage from this process's ledger (no redis_url): the one request, counted at once.
        assert status.json()["usage_source"] == "memory"
        assert status.json()["keys"][0]["usage"]["requests"] == 1
        budget = status.json()["keys"][0]["budget"]
        assert budget["usd"] == 5
        assert budget["period"] == "month"
        assert budget["spent_usd"] == pytest.approx(answer.json()["usage"]["completion_tokens"] / 1000)
        assert budget["resets_at"].endswith("-01T00:00:00Z")
        assert httpx.get(f"{admin_url}/admin/v1/status").status_code == 401
        assert httpx.get(f"{gateway.url}/status").status_code == 404  # not on the public listener

        page = httpx.get(f"{admin_url}/status")
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"
        script = httpx.get(f"{admin_url}/status/assets/status.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert "max-age" in script.headers["cache-control"]
        assert (
            httpx.get(f"{admin_url}/status/assets/status.css").headers["content-type"].startswith("text/css")
        )
        assert httpx.get(f"{admin_url}/status/assets/nothing.js").status_code == 404

        tab = browser.new_page()
        tab.goto(f"{admin_url}/status")
        tab.get_by_label("Admin key").fill("not-the-admin-key")
        tab.get_by_role("button", name="Show status").click()
        expect(tab.locator("#login-error")).to_contain_text("Wrong admin key")
        assert tab.evaluate("sessionStorage.length") == 0

        tab.get_by_label("Admin key").fill(ADMIN_KEY)
        tab.get_by_role("button", name="Show status").click()
        tripped = tab.locator(f'tr[data-target="vllm/{VLLM_MODEL}"]')
        expect(tripped).to_have_attribute("data-breaker", "open")
        expect(tripped).to_contain_text("OPEN (tripped)")
        healthy = tab.locator(f'tr[data-target="cloudflare/{CF_MODEL}"]')
        expect(healthy).to_have_attribute("data-breaker", "closed")
        expect(healthy).to_contain_text("closed")
        key_row = tab.locator('tr[data-key="team-a"]')
        expect(key_row).to_contain_text("600 rpm")
        expect(key_row).to_contain_text("1 req")
        expect(key_row).to_contain_text(f"${budget['spent_usd']:.4f} of $5.00 per month")
        expect(tab.locator("#updated")).to_contain_text("usage: memory")

        assert tab.evaluate("sessionStorage.getItem('gateway-admin-key')") == ADMIN_KEY
        assert tab.evaluate("localStorage.length") == 0
        assert tab.evaluate("document.cookie") == ""
        assert ADMIN_KEY not in tab.url

        # The page polls: a later request shows up without a reload.
        before = int(healthy.locator("td.num").first.inner_text())
        httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": "again"}]},
            headers=CLIENT,
            timeout=30,
        )
        wait_for(lambda: int(healthy.locator("td.num").first.inner_text()) > before)
        expect(key_row).to_contain_text("2 req")

        screenshot = tmp_path / "status-page.png"
        tab.screenshot(path=str(screenshot), full_page=True)
        ARTIFACTS.mkdir(exist_ok=True)
        kept = shutil.copy(screenshot, ARTIFACTS / "status-page.png")
        print(f"status page screenshot: {kept}")
