-- API clients: OAuth2 client credentials. The secret is stored only as an
-- argon2 hash (PHC string). Read by primary key (token requests, the
-- authentication middleware's revocation check) and listed in id order:
-- the primary key serves both.
CREATE TABLE api_clients (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('customer', 'seller', 'courier', 'admin')),
    secret_hash TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);

-- HS256 keys for signing tokens; the newest signs, all verify. Every
-- process of the deployment loads them at start, so they must agree: the
-- first key has a fixed kid, and processes starting together collide on
-- the primary key instead of each adding its own. A handful of rows, read
-- whole: no index beyond the key.
CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY,
    secret     BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
