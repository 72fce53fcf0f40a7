"""Knobs of the provider simulator.

Every duration below is in *simulated* seconds: the simulator divides it by
``SimulatorConfig.time_scale`` to get real seconds, so a benchmark can play a five-minute job in
a second. Only ``latency_seconds`` is real time, because it models the network, not the provider.

A job copies its behaviour and the time scale when it is created, so changing the config later
never rewrites the history of jobs already running.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

_MODEL = ConfigDict(extra="forbid")
Seconds = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]


class SamsaraBehaviour(BaseModel):
    """How one Samsara IFTA detail job plays out (chosen by the job's ``startHour``)."""

    model_config = _MODEL

    requested_seconds: Seconds = 1.0
    processing_seconds: Seconds = 2.0
    outcome: Literal["Completed", "Failed"] = "Completed"
    failure_details: str = "Internal error"
    max_vehicles: Positive | None = None
    """More vehicles than this ends the job Failed with the "limiting the number of vehicles" hint."""
    files: Count = 2
    """0 means the job completes without data, so ``files`` is omitted from the job."""
    rows_per_file: Count = 100
    bad_rows_every: Positive | None = None
    """Every Nth data row is malformed (alternately: one column short, non-numeric distance)."""
    url_ttl_seconds: Annotated[float, Field(gt=0)] = 3600.0
    gzip: bool = True
    """Serve files gzipped (``output-001.csv.gz``) as Samsara does; False serves plain CSV (benchmarks)."""


class ImpactBehaviour(BaseModel):
    """How one impact.com job plays out (chosen by the report id it exports)."""

    model_config = _MODEL

    queued_seconds: Seconds = 1.0
    running_seconds: Seconds = 2.0
    error_phases: Count = 0
    """ERROR episodes before the job recovers; 5 or more ends FAILED after the 5th retry."""
    error_retry_seconds: Seconds = 900.0
    """How long each ERROR episode lasts before the provider retries by itself."""
    cancel: bool = False
    """End CANCELLED where the job would otherwise have COMPLETED."""
    replayable: bool = True
    """``Replayable`` (a property of the job type); replay needs it and a COMPLETED, FAILED or CANCELLED job."""
    replay_succeeds: bool = True
    """A replayed job runs cleanly to COMPLETED; False replays the same scripted failure again."""
    rows: Count = 100
    bad_rows_every: Positive | None = None
    """Every Nth data row is malformed (alternately: one column short, non-numeric payout)."""


class SimulatorConfig(BaseModel):
    """The whole simulator configuration, replaceable at run time through ``POST /_sim/config``."""

    model_config = _MODEL

    time_scale: Annotated[float, Field(gt=0)] = 1.0
    latency_seconds: Seconds = 0.0
    """Real seconds added to every provider API call (not to ``/_sim`` control calls)."""
    signing_key: str = "sim-signing-key"
    """HMAC key of the presigned download URLs; fixed so that URLs are reproducible."""

    samsara_token: str = "sim-samsara-token"
    samsara_fleet: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)
    """Vehicles a job resolves to when it names no ``vehicleIds``."""
    samsara_default: SamsaraBehaviour = Field(default_factory=SamsaraBehaviour)
    samsara_behaviours: dict[str, SamsaraBehaviour] = Field(default_factory=dict)
    """Keyed by the exact ``startHour`` string of the create request."""

    impact_account_sid: str = "IRsimAccount"
    impact_auth_token: str = "sim-impact-token"
    impact_hourly_limit: Positive = 1000
    """Requests per account per (simulated) hour, every endpoint together; then 429."""
    impact_report_export_daily_limit: Positive = 100
    """ReportExport calls per account per (simulated) day; then 429."""
    impact_default: ImpactBehaviour = Field(default_factory=ImpactBehaviour)
    impact_behaviours: dict[str, ImpactBehaviour] = Field(default_factory=dict)
    """Keyed by report id (without any ``.json`` suffix)."""

    def samsara_behaviour(self, start_hour: str) -> SamsaraBehaviour:
        return self.samsara_behaviours.get(start_hour, self.samsara_default)

    def impact_behaviour(self, report_id: str) -> ImpactBehaviour:
        return self.impact_behaviours.get(report_id, self.impact_default)
