-- The catalog. Each change bumps `version` and publishes product.upserted.
CREATE TABLE products (
    id         TEXT PRIMARY KEY,
    sku        TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    price      TEXT NOT NULL,
    currency   TEXT NOT NULL,
    seller_id  TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}',
    active     INTEGER NOT NULL DEFAULT 1,
    version    INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
-- A seller's own catalog, newest first.
CREATE INDEX products_seller ON products (seller_id, id);
