-- Shipments with their materialized status, written in the same
-- transaction as each transition; `version` guards concurrent transitions.
-- One shipment per order.
CREATE TABLE shipments (
    id             TEXT PRIMARY KEY,
    order_id       TEXT NOT NULL UNIQUE,
    customer_id    TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('created', 'picked_up', 'in_transit', 'delivered', 'failed', 'cancelled')),
    failure_reason TEXT,
    next_waypoint  INTEGER NOT NULL CHECK (next_waypoint > 0),
    eta            TEXT,
    version        INTEGER NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
-- The courier simulator's live work: only shipments on their way are in
-- this index. Queries must repeat its condition to use it.
CREATE INDEX shipments_active ON shipments (id)
    WHERE status IN ('created', 'picked_up', 'in_transit');

-- One parcel per seller; `lines` is the JSON list of {product_id, quantity}.
CREATE TABLE parcels (
    shipment_id TEXT NOT NULL REFERENCES shipments (id),
    parcel_no   INTEGER NOT NULL,
    id          TEXT NOT NULL UNIQUE,
    seller_id   TEXT NOT NULL,
    lines       TEXT NOT NULL,
    PRIMARY KEY (shipment_id, parcel_no)
) WITHOUT ROWID;

-- The route: pickups, then the dropoff, in `seq` order.
CREATE TABLE waypoints (
    shipment_id TEXT NOT NULL REFERENCES shipments (id),
    seq         INTEGER NOT NULL CHECK (seq > 0),
    kind        TEXT NOT NULL CHECK (kind IN ('pickup', 'dropoff')),
    location    TEXT NOT NULL,
    PRIMARY KEY (shipment_id, seq)
) WITHOUT ROWID;

-- What couriers reported, append-only, in the order it was applied;
-- `seq` is the shipment version the event produced.
CREATE TABLE courier_events (
    shipment_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    event_id    TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('picked_up', 'waypoint_reached', 'delivered', 'failed')),
    waypoint    INTEGER,
    location    TEXT,
    eta         TEXT,
    reason      TEXT,
    actor       TEXT NOT NULL,
    at          TEXT NOT NULL,
    PRIMARY KEY (shipment_id, seq)
) WITHOUT ROWID;

CREATE TRIGGER courier_events_no_update BEFORE UPDATE ON courier_events
BEGIN
    SELECT RAISE(ABORT, 'the courier log is append-only');
END;
CREATE TRIGGER courier_events_no_delete BEFORE DELETE ON courier_events
BEGIN
    SELECT RAISE(ABORT, 'the courier log is append-only');
END;

-- Orders cancelled before their shipment existed: a late order.paid for
-- one of them creates nothing.
CREATE TABLE cancelled_orders (
    order_id     TEXT PRIMARY KEY,
    reason       TEXT NOT NULL,
    cancelled_at TEXT NOT NULL
) WITHOUT ROWID;
