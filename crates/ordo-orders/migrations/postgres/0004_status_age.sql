-- Live orders by how long their status has not moved: the stuck-orders
-- report asks, per live status, for the orders whose `updated_at` is older
-- than that stage's threshold, the longest waiting first
-- (`status = $1 AND updated_at < $2 ORDER BY updated_at, id LIMIT n`).
-- orders_status (status, id DESC) would walk every order in the status,
-- newest first, to find the old ones at its far end.
--
-- Partial: delivered and cancelled orders, nearly all rows once a shop has
-- history, are never stuck and stay out of it. A transition already
-- updates an indexed column (status), so it is not a HOT update either
-- way; this index adds one entry per transition into a live status and
-- none into a final one. The query repeats the predicate literally, so
-- that a generic plan of the prepared statement still proves it applies.
CREATE INDEX orders_live_since ON orders (status, updated_at, id)
    WHERE status IN ('pending', 'confirmed', 'paid', 'shipped');
