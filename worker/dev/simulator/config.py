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


ApiRoot = Literal["Mediapartners", "Advertisers"]


class SimReportFilter(BaseModel):
    """A filter of a report's MetaData (partner DataTypes come from the spec's enum)."""

    model_config = _MODEL

    name: str
    data_type: str
    format: str = ""


PARTNER_FILTERS = [
    SimReportFilter(name="START_DATE", data_type="String", format="yyyy-MM-dd"),
    SimReportFilter(name="END_DATE", data_type="String", format="yyyy-MM-dd"),
    SimReportFilter(name="SUBAID", data_type="String"),
]
BRAND_FILTERS = [
    SimReportFilter(name="StartDate", data_type="DATETIME", format="yyyy-MM-dd'T'HH:mm:ssZ"),
    SimReportFilter(name="EndDate", data_type="DATETIME", format="yyyy-MM-dd'T'HH:mm:ssZ"),
    SimReportFilter(name="SUBAID", data_type="INTEGER"),
    SimReportFilter(name="CONV_CURRENCY", data_type="STRING"),
]
DEFAULT_FILTERS: dict[str, list[SimReportFilter]] = {"Mediapartners": PARTNER_FILTERS, "Advertisers": BRAND_FILTERS}


class SimReport(BaseModel):
    """One report of the simulated account (``GET .../Reports``, ``.../Reports/{id}/MetaData``)."""

    model_config = _MODEL

    id: str
    api_root: ApiRoot
    name: str
    category: str = "Performance"
    description: str = ""
    api_accessible: bool = True
    """False: a report of the web app only; its MetaData and ReportExport answer 404."""
    filters: list[SimReportFilter] = []


def default_reports() -> list[SimReport]:
    return [
        SimReport(
            id="att_adv_performance_by_day",
            api_root="Mediapartners",
            name="Performance by Day",
            description="Clicks, actions and earnings per day.",
            filters=PARTNER_FILTERS,
        ),
        SimReport(
            id="mp_action_listing_fast",
            api_root="Mediapartners",
            name="Action Listing",
            category="Listing",
            description="Each action credited to you.",
            filters=[*PARTNER_FILTERS, SimReportFilter(name="MIN_PAYOUT", data_type="Decimal")],
        ),
        SimReport(
            id="mp_payment_history", api_root="Mediapartners", name="Payment History", category="Finance", api_accessible=False
        ),
        SimReport(
            id="adv_action_listing_pm",
            api_root="Advertisers",
            name="Action Listing",
            description="Lists all actions for a date range.",
            filters=BRAND_FILTERS,
        ),
        SimReport(id="adv_invoices", api_root="Advertisers", name="Invoices", category="Finance", api_accessible=False),
    ]


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
    impact_more_accounts: dict[str, str] = Field(default_factory=dict)
    """Further accounts, AccountSID to AuthToken, each with its own quotas and jobs, as a deployment
    holding several impact.com accounts has: a load test spreads its exports over them."""
    impact_hourly_limit: Positive = 1000
    """Requests per account per (simulated) hour, every endpoint together; then 429."""
    impact_report_export_daily_limit: Positive = 100
    """ReportExport calls per account per (simulated) day; then 429."""
    impact_reports: list[SimReport] = Field(default_factory=default_reports)
    """The account's report catalogue (``GET .../Reports`` lists exactly these)."""
    impact_unlisted_reports: bool = True
    """A report id the catalogue does not list is an API-accessible report with its API's default filters,
    so tests and benchmarks may name reports freely; False answers 404 for it, as a real account does."""
    impact_default: ImpactBehaviour = Field(default_factory=ImpactBehaviour)
    impact_behaviours: dict[str, ImpactBehaviour] = Field(default_factory=dict)
    """Keyed by report id (without any ``.json`` suffix)."""

    def impact_token(self, account_sid: str) -> str | None:
        if account_sid == self.impact_account_sid:
            return self.impact_auth_token
        return self.impact_more_accounts.get(account_sid)

    def samsara_behaviour(self, start_hour: str) -> SamsaraBehaviour:
        return self.samsara_behaviours.get(start_hour, self.samsara_default)

    def impact_behaviour(self, report_id: str) -> ImpactBehaviour:
        return self.impact_behaviours.get(report_id, self.impact_default)

    def impact_report(self, api_root: str, report_id: str) -> SimReport | None:
        """The report ``report_id`` of ``api_root``, whether or not the API may run it; None when unknown."""
        for report in self.impact_reports:
            if report.api_root == api_root and report.id == report_id:
                return report
        if not self.impact_unlisted_reports or api_root not in DEFAULT_FILTERS:
            return None
        return SimReport(id=report_id, api_root=api_root, name=report_id, filters=DEFAULT_FILTERS[api_root])  # type: ignore[arg-type]
