"""The daily health report: the facts of one day in, an email's subject, text and HTML out.

Pure: the actor gathers the facts (`colmena.actors.health_report`), this module only judges
what needs the operator's attention and writes it down. The facts are counts, ages and dates,
never a customer, an address, a token or a key, so the email has nothing secret to leak; every
value is escaped in the HTML part all the same.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from colmena.domain.durations import age_text
from colmena.domain.money import format_minor

OUTBOX_AGE_WARNING_S = 300.0
ATTENTION_BOT_STATES = ("crashloop", "unhealthy", "start_failed", "backoff")


@dataclass(frozen=True)
class DayActivity:
    payments: dict[str, int]  # status -> payments created in the day
    approved_minor: dict[str, int]  # currency -> minor units approved in the day
    licenses_issued: int
    licenses_revoked: int
    invoices: dict[str, int]  # status -> invoices created in the day
    invoices_failed_open: int  # every invoice in 'failed', whatever its day


@dataclass(frozen=True)
class RateFreshness:
    source: str
    pair: str
    value: Decimal
    age_s: float
    stale: bool


@dataclass(frozen=True)
class CsdExpiry:
    not_after: datetime
    days_left: int


@dataclass(frozen=True)
class LastBackup:
    finished_at: datetime
    size_bytes: int | None
    age_s: float


@dataclass(frozen=True)
class HealthFacts:
    day: date
    zone: str
    activity: DayActivity
    dead_letters: dict[str, int] | None  # queue -> dead letters; None: the broker did not answer
    broker_error: str | None
    outbox_pending: int
    outbox_oldest_age_s: float
    rates: list[RateFreshness] | None  # None: rates not installed
    bots: dict[str, int] | None
    csd: CsdExpiry | None  # None: no CSD configured, or unreadable (csd_error)
    csd_error: str | None
    csd_warn_days: int
    last_backup: LastBackup | None
    backup_max_age_s: float
    generated_at: datetime


@dataclass(frozen=True)
class HealthEmail:
    subject: str
    text: str
    html: str


@dataclass
class _Section:
    title: str
    rows: list[tuple[str, str]] = field(default_factory=list)


def _size(size: int | None) -> str:
    if size is None:
        return "unknown size"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(counts.items())) or "none"


def attention(facts: HealthFacts) -> list[str]:
    """What the operator should look at today, most urgent first."""
    found: list[str] = []
    backup = facts.last_backup
    if backup is None:
        found.append("no good backup exists")
    elif backup.age_s > facts.backup_max_age_s:
        found.append(f"the last good backup is {age_text(backup.age_s)} old")
    if facts.dead_letters is None:
        found.append(f"the broker did not answer ({facts.broker_error or 'unreachable'})")
    else:
        for queue, dead in sorted(facts.dead_letters.items()):
            if dead:
                found.append(f"{dead} dead letter(s) in {queue}")
    if facts.outbox_pending and facts.outbox_oldest_age_s > OUTBOX_AGE_WARNING_S:
        found.append(
            f"{facts.outbox_pending} outbox message(s) waiting, the oldest "
            f"{age_text(facts.outbox_oldest_age_s)}"
        )
    for rate in facts.rates or []:
        if rate.stale:
            found.append(f"rate source {rate.source} is stale ({rate.pair})")
    for state in ATTENTION_BOT_STATES:
        count = (facts.bots or {}).get(state, 0)
        if count:
            found.append(f"{count} bot(s) {state}")
    if facts.csd_error is not None:
        found.append(f"the CSD cannot be read: {facts.csd_error}")
    elif facts.csd is not None and facts.csd.days_left < facts.csd_warn_days:
        found.append(f"the CSD expires in {facts.csd.days_left} days")
    if facts.activity.invoices_failed_open:
        found.append(f"{facts.activity.invoices_failed_open} invoice(s) failed to stamp")
    return found


def _sections(facts: HealthFacts) -> list[_Section]:
    activity = facts.activity
    day = _Section(f"{facts.day.isoformat()} ({facts.zone})")
    day.rows.append(("payments", _counts(activity.payments)))
    approved = [
        format_minor(minor, currency) for currency, minor in sorted(activity.approved_minor.items())
    ]
    day.rows.append(("approved", ", ".join(approved) or "none"))
    day.rows.append(
        ("licenses", f"issued {activity.licenses_issued}, revoked {activity.licenses_revoked}")
    )
    day.rows.append(("invoices", _counts(activity.invoices)))

    messages = _Section("Messages")
    if facts.dead_letters is None:
        messages.rows.append(("dead letters", f"unknown: {facts.broker_error or 'no broker'}"))
    else:
        total = sum(facts.dead_letters.values())
        per_queue = ", ".join(f"{q} {n}" for q, n in sorted(facts.dead_letters.items()) if n)
        messages.rows.append(
            ("dead letters", f"{total}" + (f" ({per_queue})" if per_queue else ""))
        )
    oldest = f", oldest {age_text(facts.outbox_oldest_age_s)}" if facts.outbox_pending else ""
    messages.rows.append(("outbox", f"{facts.outbox_pending} pending{oldest}"))

    rates = _Section("Rates")
    if facts.rates is None:
        rates.rows.append(("rates", "not installed"))
    elif not facts.rates:
        rates.rows.append(("rates", "none published yet"))
    for rate in facts.rates or []:
        stale = ", SOURCE STALE" if rate.stale else ""
        rates.rows.append(
            (f"{rate.source} {rate.pair}", f"{rate.value}, seen {age_text(rate.age_s)} ago{stale}")
        )

    bots = _Section("Bots")
    bots.rows.append(("by state", "not installed" if facts.bots is None else _counts(facts.bots)))

    upkeep = _Section("Upkeep")
    if facts.csd_error is not None:
        upkeep.rows.append(("CSD", f"unreadable: {facts.csd_error}"))
    elif facts.csd is None:
        upkeep.rows.append(("CSD", "not configured"))
    else:
        upkeep.rows.append(
            (
                "CSD",
                f"expires {facts.csd.not_after.date().isoformat()} "
                f"({facts.csd.days_left} days left)",
            )
        )
    if facts.last_backup is None:
        upkeep.rows.append(("last backup", "none"))
    else:
        backup = facts.last_backup
        upkeep.rows.append(
            (
                "last backup",
                f"{backup.finished_at.strftime('%Y-%m-%d %H:%M UTC')} "
                f"({age_text(backup.age_s)} ago, {_size(backup.size_bytes)})",
            )
        )
    return [day, messages, rates, bots, upkeep]


def render(facts: HealthFacts) -> HealthEmail:
    issues = attention(facts)
    verdict = "all clear" if not issues else f"{len(issues)} thing(s) to look at"
    subject = f"colmena health {facts.day.isoformat()}: {verdict}"
    sections = _sections(facts)

    lines = [subject, ""]
    if issues:
        lines.append("Look at:")
        lines.extend(f"  - {issue}" for issue in issues)
        lines.append("")
    for section in sections:
        lines.append(section.title)
        width = max(len(label) for label, _ in section.rows)
        lines.extend(f"  {label:<{width}}  {value}" for label, value in section.rows)
        lines.append("")
    stamp = facts.generated_at.strftime("%Y-%m-%d %H:%M UTC")
    lines.append(f"Generated {stamp}. `colmena status` shows the live picture.")
    text = "\n".join(lines) + "\n"

    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(subject)}</title></head><body>",
        f"<h1>{e(subject)}</h1>",
    ]
    if issues:
        parts.append("<h2>Look at</h2><ul>")
        parts.extend(f"<li>{e(issue)}</li>" for issue in issues)
        parts.append("</ul>")
    for section in sections:
        parts.append(f"<h2>{e(section.title)}</h2>")
        parts.append(f'<table aria-label="{e(section.title, quote=True)}">')
        parts.extend(
            f'<tr><th scope="row">{e(label)}</th><td>{e(value)}</td></tr>'
            for label, value in section.rows
        )
        parts.append("</table>")
    parts.append(
        f"<p>Generated {e(stamp)}. <code>colmena status</code> shows the live picture.</p>"
    )
    parts.append("</body></html>")
    return HealthEmail(subject=subject, text=text, html="\n".join(parts) + "\n")
