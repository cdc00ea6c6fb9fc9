"""Service settings: one pydantic-settings class, read from `RETRYOPT_*` environment variables.

Every limit the policy enforces lives here so an operator can move it when a network or a
provider changes its figures (shared/domain.md: "keep every limit configurable").
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The model that ships with the repository: <repo>/models/default.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "default"


class Settings(BaseSettings):
    """Configuration of the HTTP service and its retry policy."""

    model_config = SettingsConfigDict(env_prefix="RETRYOPT_", extra="ignore", frozen=True)

    model_dir: Path = Field(default=DEFAULT_MODEL_DIR, description="Directory of the model bundle to serve.")
    model_uri: str | None = Field(
        default=None,
        description=(
            "MLflow URI of the model to serve (models:/NAME@champion, models:/NAME/3, runs:/ID/bundle); "
            "wins over model_dir. With an @alias, the service follows the alias (model_poll_seconds)."
        ),
    )
    model_poll_seconds: float = Field(
        default=30,
        ge=0,
        description="How often to ask the registry where the model_uri alias points, and reload when it moved; 0: never.",
    )
    model_fallback: bool = Field(
        default=True,
        description=(
            "Start in fallback mode (rules + the fixed schedule, /readyz degraded) when the model cannot be "
            "loaded; false: refuse to start instead."
        ),
    )
    fallback_success_probability: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="In fallback mode, the success probability reported for every planned retry: a prior, not a prediction.",
    )
    database_url: str = Field(
        default="sqlite:///./retryopt.db",
        description="Store of decisions and outcomes: a SQLite file by default, postgresql+psycopg://... in production.",
    )
    api_key: SecretStr | None = Field(
        default=None, description="When set, every /v1 endpoint requires it in the X-API-Key header."
    )
    admin_api_key: SecretStr | None = Field(
        default=None,
        description=(
            "Key for /admin endpoints in X-API-Key (default: api_key); with neither set, only loopback "
            "clients may call them."
        ),
    )
    graceful_shutdown_seconds: int = Field(
        default=20,
        ge=0,
        description="On SIGTERM, how long `retryopt serve` waits for in-flight requests before closing them.",
    )
    ltv_periods: float = Field(
        default=12.0,
        gt=0,
        description="Expected billing periods a recovered customer keeps paying, counting the recovered one (LTV).",
    )
    control_share: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of invoices (by a hash of the invoice id) decided by the fixed control schedule.",
    )
    control_schedule_days: tuple[float, ...] = Field(
        default=(1, 3, 5, 7),
        description="The control group's retries, in days after the first failure, at the same time of day.",
    )
    default_window_days: float = Field(
        default=14, gt=0, description="Retry window when a request gives no window_end, from the first failure."
    )
    default_max_retries: int = Field(
        default=4, ge=0, description="Retries after the first attempt when a request gives no max_retries."
    )
    max_window_days: float = Field(
        default=60, gt=0, description="Longest retry window allowed, from the first failure; longer ones are cut."
    )
    min_retry_spacing_hours: float = Field(
        default=24, ge=0, description="Least time between two attempts of an invoice (one retry per 24 h by default)."
    )
    transient_retry_spacing_hours: float = Field(
        default=1,
        ge=0,
        description="Least time after a transient processing error (processing_error, try_again_later...).",
    )
    attempt_cost: float = Field(
        default=0.02,
        ge=0,
        lt=1,
        description=(
            "Cost of one attempt as a fraction of the invoice amount: a last retry whose discounted "
            "success probability is below it is not worth making (network fees, fines risk, customer noise)."
        ),
    )
    time_discount_per_day: float = Field(
        # Chosen on a validation world (retryopt evaluate --seed 2030, not the held-out 2026):
        # 0 / 0.005 / 0.02 / 0.05 / 0.1 recovered 68.3 / 68.5 / 69.1 / 68.4 / 66.2% with the learned
        # policy, median 6.7 / 5.6 / 3.8 / 2.6 / 2.1 days to recovery.
        default=0.02,
        ge=0,
        lt=1,
        description="Value lost per day of delay, so earlier recovery wins when values are close.",
    )
    candidate_step_minutes: int = Field(default=60, ge=5, le=1440, description="Spacing of the candidate retry times.")
    visa_max_reattempts_30d: int = Field(
        default=15,
        ge=1,
        description="Visa reattempt cap on one card in 30 days (15; some readings of the 2025 rules: 20).",
    )
    mastercard_max_declines_24h: int = Field(
        default=10, ge=1, description="Mastercard excessive-attempt threshold: declines on one card in 24 hours."
    )
    mastercard_max_declines_30d: int = Field(
        default=35, ge=1, description="Mastercard excessive-attempt threshold: declines on one card in 30 days."
    )
    card_update_retry_hours: float = Field(
        default=1,
        gt=0,
        description="After a card update that follows the last failure, the first retry comes within this many hours.",
    )
    card_success_spacing_hours: float = Field(
        default=1,
        ge=0,
        description="Least time after an invoice's last failure once another invoice on the same card was paid.",
    )
    card_success_retry_hours: float = Field(
        default=4,
        gt=0,
        description="Once another invoice on the same card was paid, the next retry comes within this many hours.",
    )
    card_slot_gap_minutes: float = Field(
        default=60,
        ge=0,
        description="Retries of invoices on one card are planned at least this far apart (no two in the same hour).",
    )
    notify_customer_below: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="next_step is notify_customer when the plan's probability of recovering the invoice is below this.",
    )
    compiled_inference: bool = Field(
        default=True,
        description=(
            "Compile the served model to native code (lleaves) in the background and predict with it once "
            "ready (same probabilities, about 10x faster); LightGBM predicts until then, and when lleaves is "
            "missing or the compile fails. The reasons always use LightGBM's exact contributions."
        ),
    )
    compiled_cache_dir: Path | None = Field(
        default=None,
        description=(
            "Where compiled models are cached, keyed by the model file's content hash "
            "(default: $XDG_CACHE_HOME/retryopt/compiled or ~/.cache/retryopt/compiled)."
        ),
    )
    log_level: str = Field(default="INFO", description="Log level of the service's loggers.")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read from the environment once."""
    return Settings()
