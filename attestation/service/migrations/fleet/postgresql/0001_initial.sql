-- The fleet store: every message once per (device, seq) (the primary key makes a redelivery
-- an ON CONFLICT DO NOTHING), reported drops, per-device state, one appraisal per evidence.
CREATE TABLE fleet_messages (
    id BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,  -- `fleet events --follow` continues after it
    device TEXT NOT NULL, seq BIGINT NOT NULL, type TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL,
    received DOUBLE PRECISION NOT NULL, worker TEXT NOT NULL, body BYTEA NOT NULL,
    -- the inserting transaction: an id is handed out at insert but seen at commit, so a follower
    -- orders by (xid, id) and reads only below the oldest open transaction (fleet_store_pg.py)
    xid XID8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (device, seq)
);
CREATE INDEX fleet_messages_follow ON fleet_messages(xid, id);
CREATE TABLE fleet_drops (
    device TEXT NOT NULL, first BIGINT NOT NULL, last BIGINT NOT NULL, reported_seq BIGINT,
    PRIMARY KEY (device, first, last)
);
CREATE TABLE fleet_devices (
    device TEXT PRIMARY KEY, status TEXT, last_seen DOUBLE PRECISION,
    next_challenge DOUBLE PRECISION, cmd_seq BIGINT NOT NULL DEFAULT 0,
    contig BIGINT NOT NULL DEFAULT 0   -- every seq up to this is stored or reported dropped
);
CREATE INDEX fleet_devices_due ON fleet_devices(next_challenge) WHERE status = 'online';
CREATE TABLE fleet_appraisals (
    device TEXT NOT NULL, evidence_seq BIGINT NOT NULL, status TEXT NOT NULL,
    worker TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, ear BYTEA,
    PRIMARY KEY (device, evidence_seq)
);
