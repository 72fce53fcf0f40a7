"""The dashboard as an operator sees it: Debian's Chromium driven by Playwright, on the real Redis, a real
worker and the simulator, with ``export-worker dashboard`` running as a real process.

One stack for the module: a worker, and two dashboards on it: one with actions and users (an operator
and a viewer), one read-only without users. No browser is ever downloaded: Playwright drives
``/usr/bin/chromium`` (``apt-get install chromium``). Screenshots go to ``EXPORT_WORKER_SCREENSHOTS``
when set (``docs/`` refreshes README's pictures), else to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.integration.conftest import REQUIRE_REAL_REDIS, day_after, unique_hour
from worker.api import ExportClient
from worker.dashboard.auth import hash_password
from worker.dev.embedded import free_port
from worker.dev.localstack import LocalStack
from worker.dev.simulator import SamsaraBehaviour, SimulatorConfig

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
USERS = {"olga": ("operator", "olga-operator-pw"), "vic": ("viewer", "vic-viewer-pw")}
HOURS = {name: unique_hour(400 + index) for index, name in enumerate(("slow", "fails", "flaky", "polled", "fallback", "extra"))}
BEHAVIOURS = {
    HOURS["slow"]: SamsaraBehaviour(requested_seconds=2, processing_seconds=4, files=1, rows_per_file=50),
    HOURS["fails"]: SamsaraBehaviour(
        requested_seconds=0.5,
        processing_seconds=0.5,
        outcome="Failed",
        failure_details="Vehicle data unavailable <b>for 2 vehicles</b>",
    ),
    HOURS["flaky"]: SamsaraBehaviour(requested_seconds=1, processing_seconds=3, files=2, rows_per_file=40, bad_rows_every=9),
    HOURS["polled"]: SamsaraBehaviour(requested_seconds=1, processing_seconds=1, files=2, rows_per_file=30, bad_rows_every=7),
    HOURS["fallback"]: SamsaraBehaviour(requested_seconds=2, processing_seconds=4, files=1, rows_per_file=20),
}


@dataclass
class Dashboard:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Board:
    stack: LocalStack
    client: ExportClient
    operator: Dashboard
    read_only: Dashboard
    browser: Browser
    shots: Path


def _wait_until_serving(dashboard: Dashboard, auth: tuple[str, str] | None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if dashboard.process.poll() is not None:
            raise RuntimeError(f"the dashboard exited:\n{dashboard.log.read_text()}")
        try:
            if httpx.get(dashboard.url + "api/attention", auth=auth, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the dashboard did not answer:\n{dashboard.log.read_text()}")


def _start_dashboard(stack: LocalStack, tmp: Path, name: str, *args: str, users: bool) -> Dashboard:
    port = free_port()
    env = stack.env()
    if users:
        env["EXPORT_WORKER_DASHBOARD_USERS"] = json.dumps(
            {user: {"password_hash": hash_password(password), "role": role} for user, (role, password) in USERS.items()}
        )
    log = tmp / f"dashboard-{name}.log"
    command = [str(Path(sys.executable).parent / "export-worker"), "dashboard", "--port", str(port), *args]
    process = subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    dashboard = Dashboard(url=f"http://127.0.0.1:{port}/", process=process, log=log)
    _wait_until_serving(dashboard, ("olga", USERS["olga"][1]) if users else None)
    return dashboard


def _stop(dashboard: Dashboard) -> None:
    if dashboard.process.poll() is None:
        os.killpg(dashboard.process.pid, signal.SIGTERM)
    try:
        dashboard.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(dashboard.process.pid, signal.SIGKILL)
        dashboard.process.wait(timeout=10)


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run installs it)"
        if REQUIRE_REAL_REDIS:
            pytest.fail(message)
        pytest.skip(message)
    tmp = tmp_path_factory.mktemp("dashboard")
    shots = Path(os.environ.get("EXPORT_WORKER_SCREENSHOTS") or tmp)
    config = SimulatorConfig(samsara_behaviours=BEHAVIOURS)
    with LocalStack(require_real_redis=REQUIRE_REAL_REDIS, simulator_config=config) as stack:
        assert stack.client is not None
        stack.start_worker(concurrency=2)
        stack.wait_ready()
        operator = _start_dashboard(stack, tmp, "operator", "--allow-actions", users=True)
        read_only = _start_dashboard(stack, tmp, "read-only", users=False)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
                try:
                    yield Board(stack, stack.client, operator, read_only, browser, shots)
                finally:
                    browser.close()
        finally:
            _stop(operator)
            _stop(read_only)


def login(board: Board, user: str | None) -> Page:
    """A fresh browser context (its own profile, cookies and cache) logged in as ``user``."""
    credentials = {"username": user, "password": USERS[user][1]} if user else None
    context = board.browser.new_context(http_credentials=credentials, viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    return page


def submit(board: Board, hour: str, vehicles: int = 2) -> str:
    end = day_after(hour)
    return board.client.submit("samsara", {"startHour": hour, "endHour": end, "vehicleIds": list(range(1, vehicles + 1))})


def wait_for(board: Board, export_id: str, predicate, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate(board.client.get(export_id)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"export {export_id}: {board.client.get(export_id).record}\n{board.stack.logs()}")
        time.sleep(0.2)


def fail_downloads_of(board: Board, export_id: str, files: int) -> None:
    """Make the first download of each of the export's files answer 404 (a permanent failure)."""
    wait_for(board, export_id, lambda view: view.record.jobs["0"].provider_job_id is not None)
    job_id = board.client.get(export_id).record.jobs["0"].provider_job_id
    assert board.stack.simulator is not None
    fault = {"path_contains": f"/_files/samsara/{job_id}/", "statuses": [404] * files}
    httpx.post(board.stack.simulator.url + "/_sim/faults", json=fault, timeout=10).raise_for_status()


def test_a_running_exports_row_changes_status_on_screen_without_reload(board: Board) -> None:
    export_id = submit(board, HOURS["slow"])
    page = login(board, "olga")
    page.goto(board.operator.url + "exports")
    row = page.locator(f"#row-{export_id}")
    expect(row.locator(".status")).to_have_text(re.compile("PENDING|RUNNING"))
    expect(page.locator("#live-status")).to_have_text("live")
    page.evaluate("window.__notReloaded = true")
    expect(row.locator(".status")).to_have_text("COMPLETED", timeout=60_000)
    assert page.evaluate("window.__notReloaded") is True, "the page was reloaded"


def test_updates_fall_back_to_polling_when_server_sent_events_are_blocked(board: Board) -> None:
    export_id = submit(board, HOURS["fallback"])
    page = login(board, "olga")
    page.route(re.compile(r".*/events(\?.*)?$"), lambda route: route.abort())
    page.goto(board.operator.url + "exports")
    expect(page.locator("#live-status")).to_contain_text("polling")
    page.evaluate("window.__notReloaded = true")
    expect(page.locator(f"#row-{export_id} .status")).to_have_text("COMPLETED", timeout=60_000)
    assert page.evaluate("window.__notReloaded") is True


def test_a_failed_export_shows_its_reason_on_the_home_page(board: Board) -> None:
    export_id = submit(board, HOURS["fails"])
    page = login(board, "olga")
    page.goto(board.operator.url)
    row = page.locator(f"#row-{export_id}")
    expect(row.locator(".why")).to_contain_text("Vehicle data unavailable <b>for 2 vehicles</b>", timeout=60_000)
    expect(row.locator(".stage")).to_have_text("provider")
    expect(row.locator(".status")).to_have_text("FAILED")
    assert row.locator("b").count() == 0, "provider text must be shown as text, not markup"


def test_retry_needs_confirmation_and_then_the_export_runs_again(board: Board) -> None:
    export_id = submit(board, HOURS["flaky"])
    fail_downloads_of(board, export_id, files=2)
    wait_for(board, export_id, lambda view: view.record.status.value == "FAILED")
    page = login(board, "olga")
    page.goto(board.operator.url)
    row = page.locator(f"#row-{export_id}")
    expect(row.locator(".stage")).to_have_text("download")
    row.get_by_role("link", name="Retry…").click()
    expect(page.locator("h1")).to_have_text("Retry 1 export(s)?")
    assert board.client.get(export_id).record.status.value == "FAILED", "nothing may happen before the confirmation"
    page.get_by_role("button", name=re.compile("Confirm retry")).click()
    expect(page.locator("h1")).to_have_text("Retry: 1 of 1 done")
    page.goto(board.operator.url + f"exports/{export_id}")
    expect(page.locator("h1 .status")).to_have_text("COMPLETED", timeout=60_000)
    expect(page.locator("#timeline")).to_contain_text("retry asked by olga")
    expect(page.locator("#files")).to_contain_text("HTTP 404")
    expect(page.locator("#quarantine")).to_contain_text("expected 13 columns")
    page.screenshot(path=str(board.shots / "dashboard-export.png"), full_page=True)


def test_read_only_mode_shows_no_button(board: Board) -> None:
    export_id = submit(board, HOURS["fails"], vehicles=3)
    wait_for(board, export_id, lambda view: view.record.status.value == "FAILED")
    for dashboard, user in ((board.read_only, None), (board.operator, "vic")):
        page = login(board, user)
        page.goto(dashboard.url)
        expect(page.locator(f"#row-{export_id}")).to_be_visible()
        expect(page.locator(".who")).to_contain_text("read-only")
        for path in ("", "exports?status=FAILED", f"exports/{export_id}"):
            page.goto(dashboard.url + path)
            assert page.locator("a.button, button.danger").count() == 0, f"a button on {dashboard.url}{path} for {user}"


def test_a_cross_origin_post_is_refused(board: Board) -> None:
    export_id = submit(board, HOURS["fails"], vehicles=4)
    wait_for(board, export_id, lambda view: view.record.status.value == "FAILED")
    page = login(board, "olga")
    attack = f"""<form method="post" action="{board.operator.url}actions/retry">
      <input name="id" value="{export_id}"><input name="confirm" value="yes"><button id="go">win a prize</button></form>"""
    page.route("http://attacker.test/", lambda route: route.fulfill(body=attack, content_type="text/html"))
    page.goto("http://attacker.test/")
    page.click("#go")
    expect(page.locator("#problem")).to_contain_text("refused")
    assert board.client.get(export_id).record.status.value == "FAILED"
    assert not [event for event in board.client.timeline(export_id) if event["type"] == "action"]


def test_server_sent_events_resume_after_the_last_event_id(board: Board) -> None:
    export_id = submit(board, HOURS["polled"])
    wait_for(board, export_id, lambda view: view.record.status.value == "COMPLETED")
    timeline = board.client.timeline(export_id)
    resume_from = timeline[2]["id"]
    url = board.operator.url + f"exports/{export_id}/events"
    received: list[str] = []
    with httpx.stream("GET", url, auth=("olga", USERS["olga"][1]), headers={"Last-Event-ID": resume_from}, timeout=30) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert not any(name.startswith("access-control-") for name in answer.headers)
        for line in answer.iter_lines():
            if line.startswith("id:"):
                received.append(line.removeprefix("id:").strip())
            if len(received) == len(timeline) - 3:
                break
    assert received == [event["id"] for event in timeline[3:]]
    kinds = {event["type"] for event in timeline}
    assert {"created", "submitted", "polled", "file_done", "status"} <= kinds


def test_the_dashboard_refuses_to_listen_beyond_loopback_without_users(board: Board) -> None:
    env = {key: value for key, value in board.stack.env().items() if key != "EXPORT_WORKER_DASHBOARD_USERS"}
    command = [str(Path(sys.executable).parent / "export-worker"), "dashboard", "--host", "0.0.0.0", "--port", str(free_port())]
    answer = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert answer.returncode == 2
    assert "without authentication" in answer.stderr and "EXPORT_WORKER_DASHBOARD_USERS" in answer.stderr


def test_the_home_page_screenshot(board: Board) -> None:
    """Taken last, with a download failure and a provider hold added to the module's failures; README shows it."""
    broken = submit(board, HOURS["extra"])
    fail_downloads_of(board, broken, files=2)
    wait_for(board, broken, lambda view: view.record.status.value == "FAILED")
    assert board.stack.simulator is not None
    hold = {"path_contains": "/ifta-detail/csv", "method": "POST", "statuses": [429], "retry_after": "900"}
    httpx.post(board.stack.simulator.url + "/_sim/faults", json=hold, timeout=10).raise_for_status()
    held = submit(board, unique_hour(499))
    page = login(board, "olga")
    page.goto(board.operator.url)
    expect(page.locator(f"#row-{held} .why")).to_contain_text("answered 429", timeout=30_000)
    expect(page.locator(f"#row-{broken} .stage")).to_have_text("download")
    expect(page.locator("#live-status")).to_have_text("live")
    page.screenshot(path=str(board.shots / "dashboard-home.png"), full_page=True)


def test_the_dashboard_opens_on_the_kept_demo_stack(tmp_path: Path) -> None:
    """``export-worker demo --keep`` prints how to open the dashboard; following it shows the demo's export."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("EXPORT_WORKER_")}
    script = str(Path(sys.executable).parent / "export-worker")
    demo = subprocess.Popen(
        [script, "demo", "--keep", "--rows", "50"],
        cwd=tmp_path,
        env={**base, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    dashboard: Dashboard | None = None
    try:
        assert demo.stdout is not None
        lines: list[str] = []
        for line in demo.stdout:
            lines.append(line)
            if "export-worker dashboard" in line:
                break
        printed = "".join(lines)
        assert "http://127.0.0.1:8808/" in printed, printed
        export_id = re.search(r"submitted export (\w+)", printed).group(1)  # type: ignore[union-attr]
        env_file = Path(re.search(r"^\. (\S+)$", printed, flags=re.MULTILINE).group(1))  # type: ignore[union-attr]
        env = dict(base)
        for line in env_file.read_text().splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = shlex.split(value)[0] if value else ""
        port = free_port()
        log = tmp_path / "dashboard.log"
        process = subprocess.Popen(
            [script, "dashboard", "--port", str(port)], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        dashboard = Dashboard(url=f"http://127.0.0.1:{port}/", process=process, log=log)
        _wait_until_serving(dashboard, None)
        listing = httpx.get(dashboard.url + "exports", timeout=10).text
        assert f"row-{export_id}" in listing and "COMPLETED" in listing
        assert "jsonl files in" in httpx.get(dashboard.url + f"exports/{export_id}", timeout=10).text
    finally:
        if dashboard is not None:
            dashboard.process.terminate()
            dashboard.process.wait(timeout=15)
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(timeout=60)
