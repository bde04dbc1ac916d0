-- Stock per product. Every unit is in exactly one bucket:
-- initial + restocked = available + reserved + allocated + committed.
CREATE TABLE stock_levels (
    product_id TEXT PRIMARY KEY REFERENCES products (id),
    available  INTEGER NOT NULL CHECK (available >= 0),
    reserved   INTEGER NOT NULL CHECK (reserved >= 0),
    allocated  INTEGER NOT NULL CHECK (allocated >= 0),
    committed  INTEGER NOT NULL CHECK (committed >= 0),
    -- Sum of every adjustment ever made (the initial stock included).
    adjusted   INTEGER NOT NULL
);

-- Every adjustment, append-only: restocks, corrections, the initial stock.
CREATE TABLE stock_movements (
    id         TEXT PRIMARY KEY,
    product_id TEXT NOT NULL REFERENCES products (id),
    delta      INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    actor      TEXT NOT NULL,
    at         TEXT NOT NULL
);
CREATE INDEX stock_movements_product ON stock_movements (product_id, at);

-- What an order holds. `failed` and `released` rows stay as tombstones so a
-- late or repeated event cannot reserve again.
CREATE TABLE reservations (
    order_id       TEXT PRIMARY KEY,
    status         TEXT NOT NULL CHECK (status IN ('active', 'allocated', 'committed', 'released', 'failed')),
    release_reason TEXT,
    expires_at     TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
-- The expiry job's live work: only active holds, soonest first.
CREATE INDEX reservations_expiring ON reservations (expires_at) WHERE status = 'active';

CREATE TABLE reservation_lines (
    order_id   TEXT NOT NULL REFERENCES reservations (order_id),
    product_id TEXT NOT NULL,
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id)
) WITHOUT ROWID;

CREATE TRIGGER stock_movements_append_only_u BEFORE UPDATE ON stock_movements
BEGIN SELECT RAISE(ABORT, 'stock movements are append-only'); END;
CREATE TRIGGER stock_movements_append_only_d BEFORE DELETE ON stock_movements
BEGIN SELECT RAISE(ABORT, 'stock movements are append-only'); END;
