-- Optimistic concurrency: a write of version v applies only over version v - 1, so an
-- instance can never overwrite a change it did not see.
ALTER TABLE messages ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
