-- The verifier's state: enrolled devices, challenge sessions, appraisal results.
-- Named verifier_* because the fleet store shares the database (its own fleet_* tables).
CREATE TABLE verifier_devices (
    device TEXT PRIMARY KEY,
    key_id BYTEA NOT NULL UNIQUE,
    spki BYTEA NOT NULL,
    endorsement TEXT NOT NULL,          -- 'x509' or 'tofu'
    issuer TEXT NOT NULL,               -- CA subject, or 'trust on first use'
    enrolled_at DOUBLE PRECISION NOT NULL,
    last_bootcount BIGINT,
    key_kind TEXT NOT NULL DEFAULT 'software',
    board TEXT,
    ueid BYTEA,
    anchor BYTEA,
    certs TEXT
);
CREATE TABLE verifier_sessions (
    nonce BYTEA PRIMARY KEY,
    device TEXT NOT NULL,
    issued DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    used_at DOUBLE PRECISION          -- set once, by UPDATE ... WHERE used_at IS NULL
);
CREATE INDEX verifier_sessions_expires ON verifier_sessions(expires);
CREATE TABLE verifier_results (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device TEXT,
    at DOUBLE PRECISION NOT NULL,
    status INTEGER NOT NULL,
    evidence_sha256 BYTEA NOT NULL,
    ear BYTEA NOT NULL
);
CREATE INDEX verifier_results_device ON verifier_results(device, at);
CREATE TABLE verifier_lock_bootcounts ( -- the highest trusted bootcount of each lock MCU
    gateway TEXT NOT NULL,
    name TEXT NOT NULL,                 -- its submods entry name
    last_bootcount BIGINT NOT NULL,
    PRIMARY KEY (gateway, name)
);
