-- Orders and their items, and the indexes of every list the API issues.
--
-- How the lists are answered
-- --------------------------
-- GET /v1/orders always returns a page newest first, `ORDER BY id DESC
-- LIMIT n`, the next page starting below the cursor (`id < $cursor`). Ids
-- are prefixed ULIDs: their text order is their creation order. So every
-- list index below ends in `id` (or `order_id`) DESC: whatever the filter,
-- the page is the first n entries of one index range, read in index order,
-- with no sort, and a deeper page costs the same as the first.
--
-- The created range (created_from, created_to) has no index of its own.
-- A ULID begins with its creation time, so the store also bounds `id` by
-- the ULIDs of those instants (widened by a few seconds, see
-- CREATED_SLACK in the store) and keeps the exact `created_at` condition as
-- a re-check. That bound narrows whichever index the other filters chose
-- (the primary key alone, customer, status, seller): a range in the past
-- starts reading at its own end instead of scanning everything newer, and
-- no combination of range and filter needs a sort. An index on
-- created_at would cost every insert and still need a sort to page by id.
--
-- Ids are compared byte-wise (COLLATE "C"), whatever the database's
-- default collation: it is the order SQLite uses, the order of ULID
-- characters, and cheaper to compare than a linguistic collation.
--
-- The write path: POST /v1/orders inserts one row here, so each index
-- below costs every order. There are five on orders (primary key,
-- customer, status, the partial idempotency key, attributes) and two on
-- order_items (primary key, seller). A status transition is an UPDATE of
-- an indexed column (status), so PostgreSQL cannot make it a HOT update:
-- each transition adds an entry to every index of the row. The status
-- index is what a status filter needs; the others are kept few for that
-- reason.
CREATE TABLE orders (
    id                  TEXT COLLATE "C" PRIMARY KEY,
    customer_id         TEXT COLLATE "C" NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'paid', 'shipped', 'delivered', 'cancelled')),
    cancellation_reason TEXT,
    -- A cancel asked of a paid order, waiting for delivery's answer.
    cancel_requested    TEXT,
    currency            TEXT NOT NULL,
    total               NUMERIC NOT NULL,
    market              TEXT NOT NULL,
    shipping_address    JSONB NOT NULL,
    payment_token       TEXT NOT NULL,
    attributes          JSONB NOT NULL DEFAULT '{}',
    idempotency_key     TEXT,
    -- Guards concurrent transitions: UPDATE ... WHERE version = $expected.
    version             BIGINT NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL
);
-- The primary key serves GET /v1/orders/{id}, the unfiltered list of an
-- admin (`ORDER BY id DESC`, read backwards) and the created range alone
-- (as an id range).

-- A customer's orders, newest first: GET /v1/orders as a customer (the
-- most frequent list: the service adds the customer filter to every list
-- a customer asks for), and ?customer= for an admin. Status, range and
-- attribute filters on top are re-checked on the customer's few rows.
CREATE INDEX orders_customer ON orders (customer_id, id DESC);

-- Orders in a status, newest first: ?status= (an admin's live work:
-- pending, confirmed, paid, shipped; or everything delivered). Not
-- partial: a list of delivered or cancelled orders must not scan either.
CREATE INDEX orders_status ON orders (status, id DESC);

-- A retried POST with the same Idempotency-Key finds the order it made,
-- and two concurrent ones cannot both create (the loser gets a unique
-- violation, read as a conflict). Partial: orders placed without a key
-- (most) cost nothing here.
CREATE UNIQUE INDEX orders_idempotency ON orders (customer_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Attribute containment: ?attr.gift=true&attr.channel=web becomes
-- `attributes @> '{"gift": true, "channel": "web"}'`. jsonb_path_ops
-- indexes only what @> needs (a hash per path and value): smaller and
-- faster to update than the default jsonb_ops, which also serves key
-- existence operators the API does not offer. GIN's pending list
-- (fastupdate, on by default) batches the insertions of new orders.
-- The planner uses it for a rare value (bitmap scan, then a sort of the
-- few matches); for a common one, walking the primary key or the index of
-- the other filter and re-checking the attributes finds a page sooner.
CREATE INDEX orders_attributes ON orders USING GIN (attributes jsonb_path_ops);

CREATE TABLE order_items (
    order_id   TEXT COLLATE "C" NOT NULL REFERENCES orders (id),
    line_no    INTEGER NOT NULL,
    product_id TEXT NOT NULL,
    sku        TEXT NOT NULL,
    name       TEXT NOT NULL,
    seller_id  TEXT COLLATE "C" NOT NULL,
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    unit_price NUMERIC NOT NULL,
    line_total NUMERIC NOT NULL,
    -- The items of a page of orders: WHERE order_id = ANY($1).
    PRIMARY KEY (order_id, line_no)
);

-- A seller's orders, newest first: GET /v1/orders as a seller (every
-- list a seller asks for is narrowed to its own products) and ?seller= for
-- an admin. The list reads this index from the cursor on, an index-only
-- scan yielding distinct order ids in page order, and fetches each order
-- by its primary key, re-checking the other filters there. A seller
-- filter combined with a rare status walks the seller's orders until the
-- page is full (or meets the status index in a merge join): the one
-- combination no single index serves, since keeping the status on every
-- item row would cost each transition an update of every line.
CREATE INDEX order_items_seller ON order_items (seller_id, order_id DESC);
