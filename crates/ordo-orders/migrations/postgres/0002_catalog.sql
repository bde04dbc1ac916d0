-- The catalog as orders knows it, fed by product.upserted: an order is
-- priced from here, never from the client and never by a call to
-- inventory. Read by primary key only (`product_id = ANY($1)`).
CREATE TABLE catalog (
    product_id TEXT COLLATE "C" PRIMARY KEY,
    sku        TEXT NOT NULL,
    name       TEXT NOT NULL,
    price      NUMERIC NOT NULL,
    currency   TEXT NOT NULL,
    seller_id  TEXT NOT NULL,
    active     BOOLEAN NOT NULL,
    -- The product's version: an older upsert arriving late changes nothing.
    version    BIGINT NOT NULL
);
