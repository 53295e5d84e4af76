"""Every colmena_* metric, in one place, so names and label sets stay consistent and bounded.

Labels only ever take values from small fixed sets (provider, outcome, queue, state...), never an
id, so series counts stay flat however much traffic arrives. Worker processes write through
prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, shared with Dramatiq's own
middleware); gauges derived from the database are refreshed by the ingress when it is scraped.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Ingress
HTTP_REQUESTS = Counter(
    "colmena_http_requests_total", "HTTP requests answered.", ["route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "colmena_http_request_duration_seconds",
    "HTTP request latency.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "colmena_http_requests_in_flight", "HTTP requests being handled.", multiprocess_mode="livesum"
)
SECURITY_EVENTS = Counter(
    "colmena_security_events_total", "Requests refused for security reasons.", ["reason"]
)
HTTP_CLIENT_ABORTS = Counter(
    "colmena_http_client_aborts_total",
    "Requests whose client went away before sending all of the body.",
    ["route"],
)
WEBHOOKS = Counter(
    "colmena_webhooks_total", "Webhooks received, by provider and outcome.", ["provider", "outcome"]
)

# Database (every process)
DB_STATEMENTS = Counter(
    "colmena_db_statements_total",
    "SQL statements sent to PostgreSQL, BEGIN and COMMIT included: one round trip each.",
)

# Outbox
OUTBOX_PUBLISHED = Counter(
    "colmena_outbox_published_total",
    "Outbox rows published to the broker (path direct or relay), or run by the worker that "
    "wrote them (path local).",
    ["path"],
)
OUTBOX_PUBLISH_FAILURES = Counter(
    "colmena_outbox_publish_failures_total", "Outbox publish attempts that failed.", ["path"]
)
OUTBOX_PENDING = Gauge(
    "colmena_outbox_pending", "Outbox rows not yet published.", multiprocess_mode="max"
)
OUTBOX_OLDEST_AGE = Gauge(
    "colmena_outbox_oldest_pending_age_seconds",
    "Age of the oldest unpublished outbox row.",
    multiprocess_mode="max",
)
QUEUE_DEPTH = Gauge(
    "colmena_queue_depth",
    "Messages waiting in a queue, by kind (ready, delayed, dead).",
    ["queue", "kind"],
    multiprocess_mode="max",
)
DEAD_LETTERS = Counter(
    "colmena_dead_letters_total", "Messages that exhausted their retries.", ["queue", "actor"]
)

# Payments
PAYMENT_TRANSITIONS = Counter(
    "colmena_payment_transitions_total", "Payment statuses applied.", ["provider", "status"]
)

# Rates (gauges are read from the database by the ingress at scrape time; the latest reading wins)
RATE = Gauge(
    "colmena_rate",
    "Latest published exchange rate, VES per unit (Binance: mid).",
    ["source", "pair"],
    multiprocess_mode="mostrecent",
)
RATE_AGE = Gauge(
    "colmena_rate_age_seconds",
    "Seconds since a scrape last saw the published rate.",
    ["source", "pair"],
    multiprocess_mode="mostrecent",
)
RATE_SOURCE_STALE = Gauge(
    "colmena_rate_source_stale",
    "1 when the source failed its last N scrapes in a row.",
    ["source"],
    multiprocess_mode="mostrecent",
)
SCRAPES = Counter(
    "colmena_scrape_total", "Rate scrapes, by source and outcome.", ["source", "outcome"]
)

# Licenses
LICENSES_ISSUED = Counter(
    "colmena_licenses_issued_total", "Licenses issued (one per approved license payment)."
)
LICENSES_REVOKED = Counter(
    "colmena_licenses_revoked_total", "Licenses revoked, by source.", ["source"]
)
LICENSE_EMAILS = Counter(
    "colmena_license_emails_total",
    "License delivery emails, by outcome (sent, temporary_failure, permanent_failure).",
    ["outcome"],
)
LICENSE_DOWNLOADS = Counter(
    "colmena_license_downloads_total",
    "Download attempts, by outcome (ok, unknown, used, expired, replaced, revoked, rate_limited, "
    "unavailable).",
    ["outcome"],
)
LICENSE_CLEANUP_REMOVED = Counter(
    "colmena_license_cleanup_removed_total",
    "Dead download links removed.",
    ["kind"],
)

# Stamping (CFDI)
INVOICES = Counter(
    "colmena_invoices_total",
    "Invoice outcomes: stamped, recovered, rejected, csd_refused, invalid_data, retried, emailed, "
    "email_failed, cancellation_requested.",
    ["outcome"],
)
CSD_DAYS_LEFT = Gauge(
    "colmena_csd_days_left",
    "Days until the issuer's CSD (sello digital) expires.",
    multiprocess_mode="livemin",
)
CFDI_CANCELLATIONS = Counter(
    "colmena_cfdi_cancellations_total",
    "CFDI cancellations at the SAT: requested, filed, refused, cancelled, expired, rejected, "
    "pac_unavailable, status_unavailable.",
    ["outcome"],
)
CFDI_ACCEPTANCE_OVERDUE = Gauge(
    "colmena_cfdi_acceptance_overdue",
    "Cancellations still awaiting the receiver's acceptance past its three business days.",
    multiprocess_mode="livemax",
)

# Operations (read from RabbitMQ by the ingress at scrape time; queue is the unprefixed domain
# queue)
QUEUE_CONSUMERS = Gauge(
    "colmena_queue_consumers", "Consumers attached to a queue.", ["queue"], multiprocess_mode="max"
)

# Tenant bots (colmena_bots is read from the database by the ingress at scrape time)
BOTS = Gauge(
    "colmena_bots",
    "Tenants' bots by state (running, unhealthy, backoff, start_failed, crashloop, stopped, "
    "unknown).",
    ["state"],
    multiprocess_mode="mostrecent",
)
BOT_RESTARTS = Counter(
    "colmena_bot_restarts_total",
    "Bots restarted under the restart policy (crashed, hung or failed to start).",
)
BOT_UNHEALTHY_RESTARTS = Counter(
    "colmena_bot_unhealthy_restarts_total",
    "Running bots restarted because their heartbeat stayed stale too long.",
)
BOT_START_FAILURES = Counter(
    "colmena_bot_start_failures_total", "Bots the runtime could not start (engine refused)."
)
BOT_CRASHLOOPS = Counter(
    "colmena_bot_crashloops_total", "Bots that entered crashloop (restarts stopped)."
)
BOT_RECONCILE_SECONDS = Histogram(
    "colmena_bot_reconcile_duration_seconds",
    "Reconcile duration, one tenant or a full pass.",
    ["scope"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)

# Backups (the timestamp is read from the database by the ingress at scrape time; the scheduler
# that took the backup sets it too)
BACKUP_LAST_SUCCESS = Gauge(
    "colmena_backup_last_success_timestamp_seconds",
    "When the last good backup finished (Unix time; 0: none yet).",
    multiprocess_mode="max",
)
BACKUP_MAX_AGE = Gauge(
    "colmena_backup_max_age_seconds",
    "COLMENA_BACKUP_MAX_AGE_HOURS in seconds: ColmenaBackupTooOld compares against it.",
    multiprocess_mode="max",
)
BACKUP_FAILURES = Counter(
    "colmena_backup_failures_total",
    "Backups that failed, by stage (dump: nothing written; upload: the S3 copy).",
    ["stage"],
)

# Tenant notifications (Telegram, signed webhooks)
NOTIFICATION_DELIVERIES = Counter(
    "colmena_notification_deliveries_total",
    "Notification delivery attempts by channel and outcome (delivered, retry, dead); "
    "`busy` counts turns waited because the tenant had its limit in flight.",
    ["channel", "outcome"],
)
