-- One payment per order, with the amounts it moved. The status is written
-- in the same transaction as each change; `version` guards concurrent
-- changes (every update is `WHERE id = $1 AND version = $expected`).
-- The money invariants are also constraints, so that no writer, in any
-- process, can store a payment that breaks them.
CREATE TABLE payments (
    id                TEXT PRIMARY KEY,
    -- Unique: one payment per order. Also serves `for_order`, `totals`,
    -- and the invariant checker's `all_totals` (ordered by order id).
    order_id          TEXT NOT NULL UNIQUE,
    customer_id       TEXT NOT NULL,
    amount            NUMERIC NOT NULL,
    currency          TEXT NOT NULL,
    token             TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'authorized', 'captured',
                          'partially_refunded', 'refunded', 'voided', 'failed')),
    authorized        NUMERIC NOT NULL CHECK (authorized >= 0),
    captured          NUMERIC NOT NULL CHECK (captured >= 0),
    refunded          NUMERIC NOT NULL CHECK (refunded >= 0),
    -- At most one capture per payment, so per order.
    capture_count     INTEGER NOT NULL CHECK (capture_count IN (0, 1)),
    authorization_ref TEXT,
    capture_ref       TEXT,
    failure_reason    TEXT,
    version           BIGINT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    CONSTRAINT payments_captured_within_authorized CHECK (captured <= authorized),
    CONSTRAINT payments_refunded_within_captured CHECK (refunded <= captured)
);
-- No index on customer_id: no query of this store filters by customer (the
-- API lists payments by order).

-- Every gateway call, recorded with its idempotency key before it is made,
-- its outcome written with the effect. A retry reuses the stored key.
-- The primary key serves `attempts` (by payment, in seq order) and the
-- next sequence number (max(seq) of a payment).
CREATE TABLE payment_attempts (
    payment_id      TEXT NOT NULL REFERENCES payments (id),
    seq             BIGINT NOT NULL,
    operation       TEXT NOT NULL CHECK (operation IN ('authorize', 'capture', 'void', 'refund')),
    idempotency_key TEXT NOT NULL,
    amount          NUMERIC,
    refund_id       TEXT,
    outcome         TEXT CHECK (outcome IN ('succeeded', 'declined', 'unavailable')),
    detail          TEXT,
    started_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ,
    PRIMARY KEY (payment_id, seq)
);

CREATE TABLE refunds (
    id             TEXT PRIMARY KEY,
    payment_id     TEXT NOT NULL REFERENCES payments (id),
    amount         NUMERIC NOT NULL CHECK (amount > 0),
    reason         TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    gateway_ref    TEXT,
    failure_reason TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
-- `refunds`: a payment's refunds in id order (and the foreign key's index).
-- Pending refunds are found among these few rows, so no partial index.
CREATE INDEX refunds_payment ON refunds (payment_id, id);

-- Orders known to be cancelled, so that an order.confirmed arriving late
-- never charges. Looked up by primary key before every gateway call.
CREATE TABLE cancelled_orders (
    order_id     TEXT PRIMARY KEY,
    reason       TEXT NOT NULL,
    cancelled_at TIMESTAMPTZ NOT NULL
);
