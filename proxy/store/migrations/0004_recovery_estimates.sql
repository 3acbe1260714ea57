-- Recovery-time estimates ([retry] mode = "learned"): per (country, operator, reason)
-- key its counts, and per key and log-spaced time bin the recoveries and the seconds
-- messages were at risk. Instances add their counts; every instance reads the sum.
CREATE TABLE recovery_keys (
    country TEXT NOT NULL,
    operator TEXT NOT NULL,
    reason TEXT NOT NULL,
    recovered BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (country, operator, reason)
);
CREATE TABLE recovery_bins (
    country TEXT NOT NULL,
    operator TEXT NOT NULL,
    reason TEXT NOT NULL,
    bin INTEGER NOT NULL,
    events DOUBLE PRECISION NOT NULL,
    exposure DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (country, operator, reason, bin)
);
