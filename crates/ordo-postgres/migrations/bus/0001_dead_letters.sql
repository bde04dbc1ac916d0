-- Events a consumer failed on after its last attempt, one row per
-- (consumer, event), kept until an operator replays them.
CREATE TABLE dead_letters (
    id          TEXT PRIMARY KEY,
    consumer    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    subject     TEXT NOT NULL,
    envelope    TEXT NOT NULL,
    error       TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('parked', 'replay_requested', 'replayed')),
    parked_at   TIMESTAMPTZ NOT NULL,
    replayed_at TIMESTAMPTZ,
    UNIQUE (consumer, event_id)
);
CREATE INDEX dead_letters_open ON dead_letters (status, parked_at) WHERE status <> 'replayed';
