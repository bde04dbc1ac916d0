-- The delivery schema, in step with migrations/sqlite/0001_delivery.sql.

-- Shipments with their materialized status, written in the same
-- transaction as each transition. `version` guards concurrent transitions:
-- every transition is an UPDATE ... WHERE id = $1 AND version = $2, which
-- under READ COMMITTED waits for a concurrent writer of the row and then
-- re-checks the version against the committed row, so of a pickup and a
-- cancellation racing for one shipment exactly one applies.
-- The UNIQUE constraint on order_id is the index of the lookups by order
-- (GET /v1/orders/{id}/shipment, the reactions' find_by_order and their
-- "has this order a shipment" check), and keeps one shipment per order.
-- Ids compare byte-wise ("C"), as in SQLite, whatever the database's
-- collation: pages and work lists are in id order.
CREATE TABLE shipments (
    id             TEXT COLLATE "C" PRIMARY KEY,
    order_id       TEXT NOT NULL UNIQUE,
    customer_id    TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('created', 'picked_up', 'in_transit', 'delivered', 'failed', 'cancelled')),
    failure_reason TEXT,
    next_waypoint  BIGINT NOT NULL CHECK (next_waypoint > 0),
    eta            TIMESTAMPTZ,
    version        BIGINT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
-- The courier simulator's live work list (`active`: WHERE <this condition>
-- ORDER BY id LIMIT n): only shipments on their way are in this index, so
-- it stays as small as the live work however many shipments were
-- delivered. Queries must repeat its condition to use it.
-- The invariant listing (`list_statuses`: WHERE id > $1 ORDER BY id) walks
-- the primary key.
CREATE INDEX shipments_active ON shipments (id)
    WHERE status IN ('created', 'picked_up', 'in_transit');

-- One parcel per seller; `lines` is the JSON list of {product_id, quantity}.
-- The primary key serves loading the parcels of shipments
-- (WHERE shipment_id = ANY($1) ORDER BY shipment_id, parcel_no).
CREATE TABLE parcels (
    shipment_id TEXT NOT NULL REFERENCES shipments (id),
    parcel_no   BIGINT NOT NULL,
    id          TEXT NOT NULL UNIQUE,
    seller_id   TEXT NOT NULL,
    lines       JSONB NOT NULL,
    PRIMARY KEY (shipment_id, parcel_no)
);

-- The route: pickups, then the dropoff, in `seq` order. The primary key
-- serves loading the route of shipments
-- (WHERE shipment_id = ANY($1) ORDER BY shipment_id, seq).
CREATE TABLE waypoints (
    shipment_id TEXT NOT NULL REFERENCES shipments (id),
    seq         BIGINT NOT NULL CHECK (seq > 0),
    kind        TEXT NOT NULL CHECK (kind IN ('pickup', 'dropoff')),
    location    TEXT NOT NULL,
    PRIMARY KEY (shipment_id, seq)
);

-- What couriers reported, append-only, in the order it was applied;
-- `seq` is the shipment version the event produced. The primary key
-- serves the courier log of a shipment (WHERE shipment_id = $1 ORDER BY
-- seq) and refuses two entries for one version.
CREATE TABLE courier_events (
    shipment_id TEXT NOT NULL REFERENCES shipments (id),
    seq         BIGINT NOT NULL,
    event_id    TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('picked_up', 'waypoint_reached', 'delivered', 'failed')),
    waypoint    BIGINT,
    location    TEXT,
    eta         TIMESTAMPTZ,
    reason      TEXT,
    actor       TEXT NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (shipment_id, seq)
);

CREATE FUNCTION courier_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the courier log is append-only';
END;
$$;
CREATE TRIGGER courier_events_no_change BEFORE UPDATE OR DELETE ON courier_events
    FOR EACH ROW EXECUTE FUNCTION courier_events_append_only();
-- Row triggers do not fire on TRUNCATE.
CREATE TRIGGER courier_events_no_truncate BEFORE TRUNCATE ON courier_events
    FOR EACH STATEMENT EXECUTE FUNCTION courier_events_append_only();

-- Orders cancelled before their shipment existed: a late order.paid for
-- one of them creates nothing. Looked up by its primary key. Writing a
-- row here and creating a shipment exclude each other through a
-- transaction-scoped advisory lock on the order (see the store), since
-- neither can lock the other's row before it exists.
CREATE TABLE cancelled_orders (
    order_id     TEXT PRIMARY KEY,
    reason       TEXT NOT NULL,
    cancelled_at TIMESTAMPTZ NOT NULL
);
