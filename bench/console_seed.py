"""A large, realistic payments history for the console bench, made in the database itself.

100,000 payments one INSERT ... SELECT generate_series at a time (seconds, not the minutes a
row-by-row load through the store functions would take): three provider events each, a
license and its purchase email for the approved ones, an invoice for most licensed ones, 30
days of rates. Triggers are off while loading (`session_replication_role = replica`): the
audit trail's per-row triggers would make the load a benchmark of themselves, and the pages
measured do not need audit rows for seeded history.
"""

from __future__ import annotations

import asyncpg

SEED_SQL = [
    """
    INSERT INTO payments (provider, provider_payment_id, amount_minor, currency, customer_email,
                          customer_locale, product_ref, product_kind, status, status_at,
                          approved_at, created_at, updated_at)
    SELECT (ARRAY['stripe', 'mercadopago', 'bitso'])[1 + n % 3],
           CASE n % 3 WHEN 0 THEN 'pi_bench' || lpad(n::text, 8, '0')
                      WHEN 1 THEN (900000000 + n)::text
                      ELSE 'bitso-' || n END,
           1000 + (n * 37) % 90000,
           (ARRAY['USD', 'MXN', 'VES'])[1 + n % 3],
           'customer' || (n % 40000) || '@example.com',
           (ARRAY['es', 'en'])[1 + n % 2],
           'pro-app', 'license',
           CASE WHEN n % 10 < 8 THEN 'approved' WHEN n % 10 = 8 THEN 'pending' ELSE 'refunded' END,
           at, CASE WHEN n % 10 < 8 THEN at END, at, at
    FROM (SELECT n, now() - make_interval(secs => ($1 - n) * 60) AS at
          FROM generate_series(1, $1) AS n) AS s
    """,
    """
    INSERT INTO payment_events (payment_id, source, status, provider_at, applied, reason,
                                recorded_at)
    SELECT p.id, e.source, e.status, p.created_at + e.lag, e.applied, e.reason,
           p.created_at + e.lag + interval '1 second'
    FROM payments AS p
    CROSS JOIN (VALUES ('webhook', 'pending', interval '0 s', true, NULL),
                       ('webhook', 'approved', interval '20 s', true, NULL),
                       ('poll', 'approved', interval '60 s', false, 'already approved'))
               AS e (source, status, lag, applied, reason)
    """,
    """
    INSERT INTO licenses (id, payment_id, product_ref, edition, customer_email, customer_locale,
                          seats, issued_at, license_key, created_at)
    SELECT gen_random_uuid(), id, product_ref, 'pro', customer_email, customer_locale, 1,
           approved_at, 'BENCH-' || id, approved_at
    FROM payments WHERE status = 'approved'
    """,
    """
    INSERT INTO license_emails (license_id, reason, requested_at, attempts, sent_at,
                                smtp_message_id)
    SELECT id, 'purchase', issued_at, 1, issued_at + interval '2 s', '<' || id || '@bench>'
    FROM licenses
    """,
    """
    INSERT INTO invoices (payment_id, status, issuer_rfc, series, folio, receiver_email,
                          currency, total, uuid, created_at, updated_at)
    SELECT p.id, CASE WHEN p.id % 50 = 0 THEN 'failed' ELSE 'stamped' END, 'EKU9003173C9', 'A',
           p.id, p.customer_email, p.currency, p.amount_minor / 100.0,
           CASE WHEN p.id % 50 = 0 THEN NULL ELSE gen_random_uuid()::text END,
           p.approved_at, p.approved_at
    FROM payments AS p WHERE p.status = 'approved' AND p.id % 4 <> 0
    """,
    """
    INSERT INTO rates (source, pair, value, buy, sell, effective_date, fetched_at, last_seen_at,
                       status, reason)
    SELECT s.source, 'USD/VES', s.base + d * 0.35, s.buy, s.sell, current_date - (30 - d),
           now() - make_interval(days => 30 - d), now() - make_interval(days => 30 - d),
           'accepted', 'bench'
    FROM generate_series(0, 30) AS d
    CROSS JOIN (VALUES ('bcv', 36.5, NULL::numeric, NULL::numeric),
                       ('binance', 38.9, 39.1, 38.7)) AS s (source, base, buy, sell)
    """,
]


async def seed(conn: asyncpg.Connection, payments: int) -> dict[str, int]:
    """Load the history; the row count of each table it filled."""
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(SEED_SQL[0], payments)
        for statement in SEED_SQL[1:]:
            await conn.execute(statement)
    await conn.execute("ANALYZE")
    counts = {}
    for table in ("payments", "payment_events", "licenses", "license_emails", "invoices", "rates"):
        counts[table] = await conn.fetchval(f"SELECT count(*) FROM {table}")
    return counts
