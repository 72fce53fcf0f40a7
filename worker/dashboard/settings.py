"""Who may use the dashboard: users with hashed passwords and a role, from the environment like every setting.

``EXPORT_WORKER_DASHBOARD_USERS='{"alice": {"password_hash": "$argon2id$...", "role": "operator"}}'``;
``export-worker dashboard --hash-password`` prints a hash to paste there. A viewer sees everything
and can change nothing; an operator may retry and cancel when the dashboard runs with ``--allow-actions``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Role = Literal["viewer", "operator"]


class DashboardUser(BaseModel):
    password_hash: str = Field(pattern=r"^\$argon2id\$")
    """An Argon2id hash in the PHC string format (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``)."""
    role: Role = "viewer"


class DashboardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EXPORT_WORKER_DASHBOARD_", env_file=".env", extra="ignore")

    users: dict[str, DashboardUser] = Field(default_factory=dict, description="Basic-auth users (secret hashes).")
    public_origin: str | None = Field(
        None,
        description="scheme://host[:port] the browser uses, when a reverse proxy rewrites Host (checked against Origin on POST).",
    )
    failed_window_hours: float = Field(48.0, gt=0, description="Needs attention lists exports that failed this recently.")
