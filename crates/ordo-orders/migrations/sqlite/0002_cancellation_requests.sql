-- A paid order is cancelled in two steps: the request, then delivery's
-- answer. The requested reason waits here meanwhile.
ALTER TABLE orders ADD COLUMN cancel_requested TEXT;
