-- Orders with their materialized status, written in the same transaction
-- as each transition; `version` guards concurrent transitions.
CREATE TABLE orders (
    id                  TEXT PRIMARY KEY,
    customer_id         TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'paid', 'shipped', 'delivered', 'cancelled')),
    cancellation_reason TEXT,
    currency            TEXT NOT NULL,
    total               TEXT NOT NULL,
    market              TEXT NOT NULL,
    shipping_address    TEXT NOT NULL,
    payment_token       TEXT NOT NULL,
    attributes          TEXT NOT NULL DEFAULT '{}',
    idempotency_key     TEXT,
    version             INTEGER NOT NULL,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
-- List filters, each walking ids newest first (the keyset order).
CREATE INDEX orders_customer ON orders (customer_id, id);
CREATE INDEX orders_status ON orders (status, id);
CREATE INDEX orders_created ON orders (created_at, id);
-- A retried create with the same key finds the order it made.
CREATE UNIQUE INDEX orders_idempotency ON orders (customer_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE order_items (
    order_id   TEXT NOT NULL REFERENCES orders (id),
    line_no    INTEGER NOT NULL,
    product_id TEXT NOT NULL,
    sku        TEXT NOT NULL,
    name       TEXT NOT NULL,
    seller_id  TEXT NOT NULL,
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    unit_price TEXT NOT NULL,
    line_total TEXT NOT NULL,
    PRIMARY KEY (order_id, line_no)
) WITHOUT ROWID;
-- A seller's orders.
CREATE INDEX order_items_seller ON order_items (seller_id, order_id);

-- The catalog as orders knows it, fed by product.upserted.
CREATE TABLE catalog (
    product_id TEXT PRIMARY KEY,
    sku        TEXT NOT NULL,
    name       TEXT NOT NULL,
    price      TEXT NOT NULL,
    currency   TEXT NOT NULL,
    seller_id  TEXT NOT NULL,
    active     INTEGER NOT NULL,
    version    INTEGER NOT NULL
);

-- What happened to each order, append-only, in the order it was learned.
CREATE TABLE timeline (
    order_id       TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    event_id       TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    at             TEXT NOT NULL,
    actor          TEXT,
    correlation_id TEXT NOT NULL,
    sequence       INTEGER,
    data           TEXT NOT NULL,
    PRIMARY KEY (order_id, seq),
    UNIQUE (order_id, event_id)
) WITHOUT ROWID;

CREATE TRIGGER timeline_no_update BEFORE UPDATE ON timeline
BEGIN
    SELECT RAISE(ABORT, 'the timeline is append-only');
END;
CREATE TRIGGER timeline_no_delete BEFORE DELETE ON timeline
BEGIN
    SELECT RAISE(ABORT, 'the timeline is append-only');
END;
