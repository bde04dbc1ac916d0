-- Live orders by how long their status has not moved, for the
-- stuck-orders report: `status = ? AND updated_at < ? ORDER BY updated_at,
-- id LIMIT n` is one range of this index, read in order. Partial, as in
-- PostgreSQL: delivered and cancelled orders are never stuck. SQLite uses
-- a partial index only when the query's WHERE implies its predicate, so
-- the query repeats it literally.
CREATE INDEX orders_live_since ON orders (status, updated_at, id)
    WHERE status IN ('pending', 'confirmed', 'paid', 'shipped');
