-- The audit log: one row per state-changing request an admin made (API
-- clients created or revoked, dead letters replayed, refunds, cancels,
-- chaos changes), through the API or the console. Append-only, written by
-- any process. Ids are prefixed ULIDs compared byte-wise (COLLATE "C"), so
-- the primary key is also time order: the list walks it newest first from
-- a keyset cursor, and needs no other index.
CREATE TABLE audit_log (
    id         TEXT COLLATE "C" PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    actor_id   TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    status     SMALLINT NOT NULL,
    request_id TEXT
);
