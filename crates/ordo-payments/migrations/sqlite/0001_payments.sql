-- One payment per order, with the amounts it moved. The status is written
-- in the same transaction as each change; `version` guards concurrent
-- changes. Money is decimal text, never a float.
CREATE TABLE payments (
    id                TEXT PRIMARY KEY,
    order_id          TEXT NOT NULL UNIQUE,
    customer_id       TEXT NOT NULL,
    amount            TEXT NOT NULL,
    currency          TEXT NOT NULL,
    token             TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'authorized', 'captured',
                          'partially_refunded', 'refunded', 'voided', 'failed')),
    authorized        TEXT NOT NULL,
    captured          TEXT NOT NULL,
    refunded          TEXT NOT NULL,
    -- At most one capture per payment, so per order.
    capture_count     INTEGER NOT NULL CHECK (capture_count IN (0, 1)),
    authorization_ref TEXT,
    capture_ref       TEXT,
    failure_reason    TEXT,
    version           INTEGER NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
-- A customer's payments.
CREATE INDEX payments_customer ON payments (customer_id, id);

-- Every gateway call, recorded with its idempotency key before it is made,
-- its outcome written with the effect. A retry reuses the stored key.
CREATE TABLE payment_attempts (
    payment_id      TEXT NOT NULL REFERENCES payments (id),
    seq             INTEGER NOT NULL,
    operation       TEXT NOT NULL CHECK (operation IN ('authorize', 'capture', 'void', 'refund')),
    idempotency_key TEXT NOT NULL,
    amount          TEXT,
    refund_id       TEXT,
    outcome         TEXT CHECK (outcome IN ('succeeded', 'declined', 'unavailable')),
    detail          TEXT,
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    PRIMARY KEY (payment_id, seq)
) WITHOUT ROWID;

CREATE TABLE refunds (
    id             TEXT PRIMARY KEY,
    payment_id     TEXT NOT NULL REFERENCES payments (id),
    amount         TEXT NOT NULL,
    reason         TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    gateway_ref    TEXT,
    failure_reason TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX refunds_payment ON refunds (payment_id, id);
-- Refunds waiting for the gateway's answer: live work.
CREATE INDEX refunds_pending ON refunds (payment_id) WHERE status = 'pending';

-- Orders known to be cancelled, so that an order.confirmed arriving late
-- never charges.
CREATE TABLE cancelled_orders (
    order_id     TEXT PRIMARY KEY,
    reason       TEXT NOT NULL,
    cancelled_at TEXT NOT NULL
) WITHOUT ROWID;
