-- Sessions of the web console. The cookie holds a random token; only its
-- SHA-256 is kept, so the file alone opens no session. Each session has
-- its own CSRF token, sent back with every form.
CREATE TABLE console_sessions (
    token_hash  TEXT PRIMARY KEY,
    client_id   TEXT NOT NULL REFERENCES api_clients (id),
    csrf_token  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);

-- Expired sessions are deleted in expiry order.
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
