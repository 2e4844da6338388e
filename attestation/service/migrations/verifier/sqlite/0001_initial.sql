-- The verifier's state: enrolled devices, challenge sessions, appraisal results.
-- IF NOT EXISTS: a database made before versioned migrations already has these tables
-- (its later columns are added by the migration runner before this runs).
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY,
    key_id BLOB NOT NULL UNIQUE,
    spki BLOB NOT NULL,
    endorsement TEXT NOT NULL,          -- 'x509' or 'tofu'
    issuer TEXT NOT NULL,               -- CA subject, or 'trust on first use'
    enrolled_at REAL NOT NULL,
    last_bootcount INTEGER,
    key_kind TEXT NOT NULL DEFAULT 'software', -- 'tpm' only if the certificate says so
    board TEXT,                         -- fixed at enrollment (certificate or first evidence)
    ueid BLOB,                          -- pinned by the first trustworthy appraisal
    anchor BLOB,                        -- SHA-256 of the maker CA certificate that endorsed it
    certs TEXT                          -- revocation ids of the chain: "issuer-hex:serial-hex ..."
);
CREATE TABLE IF NOT EXISTS sessions (
    nonce BLOB PRIMARY KEY,
    device TEXT NOT NULL,
    issued REAL NOT NULL,
    expires REAL NOT NULL,
    used_at REAL
);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT,
    at REAL NOT NULL,
    status INTEGER NOT NULL,
    evidence_sha256 BLOB NOT NULL,
    ear BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS results_device ON results(device, at);
CREATE TABLE IF NOT EXISTS lock_bootcounts ( -- the highest trusted bootcount of each lock MCU
    gateway TEXT NOT NULL,
    name TEXT NOT NULL,                 -- its submods entry name
    last_bootcount INTEGER NOT NULL,
    PRIMARY KEY (gateway, name)
);
