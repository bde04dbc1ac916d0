-- Events written in the same transaction as the state change they
-- describe. Relays claim unpublished rows with FOR UPDATE SKIP LOCKED and
-- lease them until they are marked; `seq` only orders the claims (it is
-- never used as a "last seen" cursor: sequence values commit out of order).
CREATE TABLE outbox (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     TEXT NOT NULL UNIQUE,
    event_type   TEXT NOT NULL,
    subject      TEXT NOT NULL,
    envelope     TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    published_at TIMESTAMPTZ,
    leased_until TIMESTAMPTZ
);
-- The relays' live work: only unpublished rows are in this index, so it
-- stays small however long published rows are kept.
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX outbox_subject ON outbox (subject, seq);
-- The retention purge deletes published rows by age.
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;

-- No NOTIFY trigger: a NOTIFY inside the writing transaction takes a
-- database-wide lock at commit and holds it through the WAL flush, which
-- serializes every commit that sends one. The writing process wakes its
-- own relays and notifies other processes after the commit (PgDatabase).

-- Events a consumer has applied, written with the effect.
CREATE TABLE inbox (
    consumer     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX inbox_processed ON inbox (processed_at);

CREATE TABLE idempotency_keys (
    scope            TEXT NOT NULL,
    key              TEXT NOT NULL,
    fingerprint      TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('in_flight', 'completed')),
    response_status  INTEGER,
    response_headers TEXT,
    response_body    BYTEA,
    locked_at        TIMESTAMPTZ NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    completed_at     TIMESTAMPTZ,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
