-- Publishing a row updates it out of the partial index of unpublished
-- rows, but the index keeps an entry for it until a vacuum removes it, and
-- each claim walks those entries. By default autovacuum waits until a
-- fifth of the table is dead: with published rows kept for days that is
-- hundreds of thousands of entries, and a claim that took a millisecond
-- takes tens (measured: 40,000 dead entries, 20 ms per claim, the saga's
-- p95 from 25 ms to over 500 ms). Vacuum the outbox after a fixed number
-- of updates instead, however large the table grows.
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_cost_delay = 0
);
