-- The fleet store: every message once per (device, seq), reported drops, per-device state,
-- one appraisal per evidence. IF NOT EXISTS: a store made before versioned migrations already
-- has these tables (its devices.contig column is added by the runner before this runs).
CREATE TABLE IF NOT EXISTS messages (
    device TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, ts REAL NOT NULL,
    received REAL NOT NULL, worker TEXT NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY (device, seq)
);
CREATE TABLE IF NOT EXISTS drops (
    device TEXT NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL, reported_seq INTEGER,
    PRIMARY KEY (device, first, last)
);
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY, status TEXT, last_seen REAL,
    next_challenge REAL, cmd_seq INTEGER NOT NULL DEFAULT 0,
    contig INTEGER NOT NULL DEFAULT 0   -- every seq up to this is stored or reported dropped
);
CREATE TABLE IF NOT EXISTS appraisals (
    device TEXT NOT NULL, evidence_seq INTEGER NOT NULL, status TEXT NOT NULL,
    worker TEXT NOT NULL, at REAL NOT NULL, ear BLOB,
    PRIMARY KEY (device, evidence_seq)
);
