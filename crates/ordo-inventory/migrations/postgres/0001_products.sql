-- The catalog, in step with migrations/sqlite/0001_products.sql. Each
-- change bumps `version` (updates are guarded by it) and publishes
-- product.upserted.
-- Ids compare byte-wise ("C"), as in SQLite, whatever the database's
-- collation: pages are in id order and keyset cursors are ids.
-- The primary key serves GET /v1/products/{id} and the unfiltered product
-- list (WHERE id > $1 ORDER BY id LIMIT n); the UNIQUE constraint on sku
-- keeps one product per SKU.
CREATE TABLE products (
    id         TEXT COLLATE "C" PRIMARY KEY,
    sku        TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    price      NUMERIC NOT NULL,
    currency   TEXT NOT NULL,
    seller_id  TEXT NOT NULL,
    attributes JSONB NOT NULL DEFAULT '{}',
    active     BOOLEAN NOT NULL DEFAULT TRUE,
    version    BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
-- A seller's own catalog (GET /v1/products as a seller:
-- WHERE seller_id = $1 AND id > $2 ORDER BY id LIMIT n): one range scan of
-- this index, already in page order, however large the whole catalog.
CREATE INDEX products_seller ON products (seller_id, id);
