-- Stock and reservations, in step with
-- migrations/sqlite/0002_stock_and_reservations.sql.

-- Stock per product. Every unit is in exactly one bucket:
-- initial + restocked = available + reserved + allocated + committed.
-- Decisions lock the rows they read (SELECT ... WHERE product_id = ANY($1)
-- ORDER BY product_id FOR UPDATE, through the primary key), always in
-- product id order, so concurrent reservations of one product queue up
-- and reservations of overlapping products cannot deadlock. The CHECKs are
-- the last guard against an oversell should a code path skip the decision.
CREATE TABLE stock_levels (
    product_id TEXT COLLATE "C" PRIMARY KEY REFERENCES products (id),
    available  BIGINT NOT NULL CHECK (available >= 0),
    reserved   BIGINT NOT NULL CHECK (reserved >= 0),
    allocated  BIGINT NOT NULL CHECK (allocated >= 0),
    committed  BIGINT NOT NULL CHECK (committed >= 0),
    -- Sum of every adjustment ever made (the initial stock included).
    adjusted   BIGINT NOT NULL
);

-- Every adjustment, append-only: restocks, corrections, the initial stock.
CREATE TABLE stock_movements (
    id         TEXT PRIMARY KEY,
    product_id TEXT COLLATE "C" NOT NULL REFERENCES products (id),
    delta      BIGINT NOT NULL,
    reason     TEXT NOT NULL,
    actor      TEXT NOT NULL,
    at         TIMESTAMPTZ NOT NULL
);
-- A product's movement history in time order; also the index PostgreSQL
-- needs for the foreign key (it does not create one on its own).
CREATE INDEX stock_movements_product ON stock_movements (product_id, at);

CREATE FUNCTION stock_movements_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'stock movements are append-only';
END;
$$;
CREATE TRIGGER stock_movements_append_only BEFORE UPDATE OR DELETE ON stock_movements
    FOR EACH ROW EXECUTE FUNCTION stock_movements_append_only();

-- What an order holds. `failed` and `released` rows stay as tombstones so a
-- late or repeated event cannot reserve again.
-- The primary key serves the decisions (one order's reservation, locked
-- FOR UPDATE), GET /v1/orders/{id}/reservation and the full listing in
-- order id order.
CREATE TABLE reservations (
    order_id       TEXT COLLATE "C" PRIMARY KEY,
    status         TEXT NOT NULL CHECK (status IN ('active', 'allocated', 'committed', 'released', 'failed')),
    release_reason TEXT,
    expires_at     TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
-- The expiry job's live work (WHERE status = 'active' AND expires_at <= $1
-- ORDER BY expires_at, and min(expires_at) for its next wake-up): only
-- active holds are in this index, so it stays as small as the open holds
-- however many reservations were ever made. Queries must repeat its
-- condition to use it.
CREATE INDEX reservations_expiring ON reservations (expires_at) WHERE status = 'active';

-- The primary key serves loading an order's lines (WHERE order_id = $1
-- ORDER BY product_id) and all lines for the listing.
CREATE TABLE reservation_lines (
    order_id   TEXT COLLATE "C" NOT NULL REFERENCES reservations (order_id),
    product_id TEXT COLLATE "C" NOT NULL,
    quantity   BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id)
);
