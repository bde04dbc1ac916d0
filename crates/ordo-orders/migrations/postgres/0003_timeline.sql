-- What happened to each order, append-only, in the order it was learned.
-- The primary key (order_id, seq) serves GET /v1/orders/{id}/timeline and
-- the next seq of an append (max(seq) of the order); (order_id, event_id)
-- makes a redelivered event a no-op. An append first checks that the
-- order's previous event (by its `sequence`) is there, among the few rows
-- of that order the primary key finds.
CREATE TABLE timeline (
    order_id       TEXT COLLATE "C" NOT NULL,
    seq            BIGINT NOT NULL,
    event_id       TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    at             TIMESTAMPTZ NOT NULL,
    actor          TEXT,
    correlation_id TEXT NOT NULL,
    sequence       BIGINT,
    data           JSONB NOT NULL,
    PRIMARY KEY (order_id, seq),
    UNIQUE (order_id, event_id)
);

CREATE FUNCTION timeline_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the timeline is append-only';
END;
$$;
CREATE TRIGGER timeline_append_only BEFORE UPDATE OR DELETE ON timeline
    FOR EACH ROW EXECUTE FUNCTION timeline_append_only();
