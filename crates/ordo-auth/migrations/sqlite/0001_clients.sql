-- API clients: OAuth2 client credentials. The secret is stored only as an
-- argon2 hash (PHC string).
CREATE TABLE api_clients (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('customer', 'seller', 'courier', 'admin')),
    secret_hash TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);

-- HS256 keys for signing tokens; the newest signs, all verify.
CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY,
    secret     BLOB NOT NULL,
    created_at TEXT NOT NULL
);
