-- The hourly purge deletes published outbox rows and old inbox rows by
-- age; both indexes grow at their end, as time goes.
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX inbox_processed ON inbox (processed_at);
