-- Recovery-time estimates: how many soft-bounced messages each key has seen (the
-- weight of its reason in the target delay, and how far its probing has come).
ALTER TABLE recovery_keys ADD COLUMN messages BIGINT NOT NULL DEFAULT 0;
