"""Start the dashboard with uvicorn, refusing to listen beyond loopback without users to authenticate."""

from __future__ import annotations

import getpass
import ipaddress
from collections.abc import Callable
from typing import Any

import uvicorn

from worker.api import ExportClient
from worker.dashboard.app import create_app
from worker.dashboard.auth import hash_password
from worker.dashboard.settings import DashboardSettings
from worker.errors import InvalidRequest


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def hash_from_prompt() -> str:
    password = getpass.getpass("password: ")
    if len(password) < 8 or password != getpass.getpass("again: "):
        raise SystemExit("passwords differ or are shorter than 8 characters")
    return hash_password(password)


def serve(client: ExportClient, *, host: str, port: int, allow_actions: bool, say: Callable[..., Any] = print) -> None:
    settings = DashboardSettings()
    if not is_loopback(host) and not settings.users:
        raise InvalidRequest(
            f"refusing to serve the dashboard on {host} without authentication: set EXPORT_WORKER_DASHBOARD_USERS "
            "(users with Argon2id hashes from `export-worker dashboard --hash-password`), or listen on 127.0.0.1"
        )
    client.status_counts()  # fail now, with the CLI's clear message, when Redis is not reachable
    mode = "actions on (operators may retry and cancel)" if allow_actions else "read-only"
    logins = f"{len(settings.users)} user(s)" if settings.users else "no login (loopback only)"
    say(f"dashboard on http://{host}:{port}/ ({mode}; {logins}); Ctrl-C stops it", highlight=False, markup=False)
    uvicorn.run(create_app(client, settings, allow_actions=allow_actions), host=host, port=port, log_level="warning")
