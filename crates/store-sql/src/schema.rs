//! The schema and its migrations, once for every database: each step is written once and
//! rendered for the dialect (column types, the append-only triggers). `mamori_schema` records
//! the steps applied; a step runs once.
//!
//! Text columns compared by range (prefix search, paging) are byte-ordered: SQLite's default,
//! and the "C" collation on PostgreSQL.

use crate::{Conn, Dialect, Error, vals};

/// Step 1: the tables as of the unification (#23). Every statement is `IF NOT EXISTS`, so an
/// embedded store made before `mamori_schema` existed is brought to this step by running it.
const BASE: &str = r#"
CREATE TABLE IF NOT EXISTS versions (
    seq {SEQ},
    type {KEY} NOT NULL,
    id {KEY} NOT NULL,
    version {INT} NOT NULL,
    last_updated {INT} NOT NULL,
    method TEXT NOT NULL,
    body TEXT,
    sha256 {BLOB} NOT NULL,
    entered_by TEXT NOT NULL,
    pending_author TEXT,
    server_written {BOOL} NOT NULL DEFAULT {FALSE},
    patient TEXT,
    classes TEXT NOT NULL DEFAULT '',
    lab {BOOL} NOT NULL DEFAULT {FALSE},
    UNIQUE (type, id, version)
);
CREATE INDEX IF NOT EXISTS versions_by_time ON versions (last_updated);
CREATE INDEX IF NOT EXISTS versions_by_type ON versions (type, seq);
CREATE TABLE IF NOT EXISTS resources (
    type {KEY} NOT NULL,
    id {KEY} NOT NULL,
    seq {INT} NOT NULL,
    PRIMARY KEY (type, id)
){NOROWID};
CREATE TABLE IF NOT EXISTS identifier_index (
    type {KEY} NOT NULL, id {KEY} NOT NULL, system {KEY} NOT NULL, value {KEY} NOT NULL
);
CREATE INDEX IF NOT EXISTS identifier_lookup ON identifier_index (type, value, system);
CREATE INDEX IF NOT EXISTS identifier_owner ON identifier_index (type, id);
-- Care relationships (Z3) from the current versions of CareTeam, Encounter and Patient.
CREATE TABLE IF NOT EXISTS care_index (
    type {KEY} NOT NULL, id {KEY} NOT NULL, patient {KEY} NOT NULL, member {KEY} NOT NULL
);
CREATE INDEX IF NOT EXISTS care_lookup ON care_index (patient, member);
CREATE INDEX IF NOT EXISTS care_owner ON care_index (type, id);
-- Break-glass grants (Z5) and their review.
CREATE TABLE IF NOT EXISTS break_glass (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    patient TEXT NOT NULL,
    reason TEXT NOT NULL,
    granted {INT} NOT NULL,
    expires {INT} NOT NULL,
    reviewed_at {INT},
    reviewed_by TEXT,
    review_note TEXT
);
CREATE INDEX IF NOT EXISTS break_glass_lookup ON break_glass (username, patient, expires);
CREATE TABLE IF NOT EXISTS sp_string (type {KEY} NOT NULL, id {KEY} NOT NULL, param {KEY} NOT NULL, norm {KEY} NOT NULL, exact {KEY} NOT NULL,
    PRIMARY KEY (type, id, param, norm, exact)){NOROWID};
CREATE INDEX IF NOT EXISTS sp_string_value ON sp_string (type, param, norm);
CREATE TABLE IF NOT EXISTS sp_token (type {KEY} NOT NULL, id {KEY} NOT NULL, param {KEY} NOT NULL, system {KEY} NOT NULL, code {KEY} NOT NULL, text {KEY} NOT NULL,
    PRIMARY KEY (type, id, param, code, system, text)){NOROWID};
CREATE INDEX IF NOT EXISTS sp_token_value ON sp_token (type, param, code, system);
CREATE TABLE IF NOT EXISTS sp_date (type {KEY} NOT NULL, id {KEY} NOT NULL, param {KEY} NOT NULL, lo {INT} NOT NULL, hi {INT} NOT NULL,
    PRIMARY KEY (type, id, param, lo, hi)){NOROWID};
CREATE INDEX IF NOT EXISTS sp_date_value ON sp_date (type, param, lo);
CREATE TABLE IF NOT EXISTS sp_number (type {KEY} NOT NULL, id {KEY} NOT NULL, param {KEY} NOT NULL, lo {REAL} NOT NULL, hi {REAL} NOT NULL, system {KEY} NOT NULL, code {KEY} NOT NULL,
    PRIMARY KEY (type, id, param, lo, hi, system, code)){NOROWID};
CREATE INDEX IF NOT EXISTS sp_number_value ON sp_number (type, param, lo);
CREATE TABLE IF NOT EXISTS sp_ref (type {KEY} NOT NULL, id {KEY} NOT NULL, param {KEY} NOT NULL, target_type {KEY} NOT NULL, target_id {KEY} NOT NULL, url {KEY} NOT NULL,
    PRIMARY KEY (type, id, param, target_type, target_id, url)){NOROWID};
CREATE INDEX IF NOT EXISTS sp_ref_value ON sp_ref (type, param, target_id, target_type);
CREATE TABLE IF NOT EXISTS sp_composite (type {KEY} NOT NULL, id {KEY} NOT NULL, param {KEY} NOT NULL, system {KEY} NOT NULL, code {KEY} NOT NULL, s_system {KEY} NOT NULL, s_code {KEY} NOT NULL, lo {REAL}, hi {REAL});
CREATE INDEX IF NOT EXISTS sp_composite_value ON sp_composite (type, param, code, system);
CREATE INDEX IF NOT EXISTS sp_composite_owner ON sp_composite (type, id, param);
CREATE TABLE IF NOT EXISTS store_flags (name TEXT PRIMARY KEY, value TEXT NOT NULL);
{VERSIONS:config_versions}
CREATE TABLE IF NOT EXISTS access_tokens (
    sha256 {BLOB} PRIMARY KEY,
    client_id TEXT NOT NULL,
    subject TEXT,
    fhir_user TEXT,
    scope TEXT NOT NULL,
    issued_at {INT} NOT NULL,
    expires_at {INT} NOT NULL,
    revoked {BOOL} NOT NULL DEFAULT {FALSE},
    patient TEXT,
    family TEXT
){NOROWID};
CREATE INDEX IF NOT EXISTS access_tokens_by_client ON access_tokens (client_id);
CREATE INDEX IF NOT EXISTS access_tokens_by_subject ON access_tokens (subject);
CREATE INDEX IF NOT EXISTS access_tokens_by_family ON access_tokens (family);
-- private_key_jwt replay cache: each assertion's jti once per client, until it expires.
CREATE TABLE IF NOT EXISTS client_assertions (
    client_id TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_at {INT} NOT NULL,
    PRIMARY KEY (client_id, jti)
){NOROWID};
-- Authorization codes (by hash; JSON record), kept after use until expiry so a replay is seen.
CREATE TABLE IF NOT EXISTS auth_codes (
    sha256 {BLOB} PRIMARY KEY,
    data TEXT NOT NULL,
    expires_at {INT} NOT NULL,
    used {BOOL} NOT NULL DEFAULT {FALSE}
){NOROWID};
-- Refresh tokens (by hash), rotated on use; `family` ties them to the access tokens of one
-- authorization so reuse revokes them all.
CREATE TABLE IF NOT EXISTS refresh_tokens (
    sha256 {BLOB} PRIMARY KEY,
    family TEXT NOT NULL,
    client_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    fhir_user TEXT,
    scope TEXT NOT NULL,
    patient TEXT,
    issued_at {INT} NOT NULL,
    expires_at {INT} NOT NULL,
    used {BOOL} NOT NULL DEFAULT {FALSE},
    revoked {BOOL} NOT NULL DEFAULT {FALSE}
){NOROWID};
CREATE INDEX IF NOT EXISTS refresh_by_family ON refresh_tokens (family);
CREATE INDEX IF NOT EXISTS refresh_by_subject ON refresh_tokens (subject);
-- The audit trail (L2/L3): append-only entries; leaf index = idx - 1.
{TRAIL}-- Identity: credentials (Argon2id hashes, sealed TOTP seeds) and lockout counters. Account
-- definitions live in config_versions (kind 'account').
CREATE TABLE IF NOT EXISTS credentials (username TEXT PRIMARY KEY, data TEXT NOT NULL){NOROWID};
CREATE TABLE IF NOT EXISTS auth_state (username TEXT PRIMARY KEY, data TEXT NOT NULL, last_login {INT}){NOROWID};
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, username TEXT NOT NULL, data TEXT NOT NULL){NOROWID};
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (username);
"#;

/// Step 2: workflow state (access-review campaigns) in a table of its own: versioned and audited
/// like configuration, but not counted as a configuration change. Campaigns kept among the
/// configuration versions before are copied (the old rows stay, as history, and are not read).
const WORKFLOW: &str = r#"
{VERSIONS:workflow_versions}
INSERT INTO workflow_versions (kind, key, version, value, changed_by, changed_at, reason)
SELECT kind, key, version, value, changed_by, changed_at, reason FROM config_versions WHERE kind = 'access-review'
ON CONFLICT DO NOTHING;
"#;

/// Step 3: an index of the alert entries (`alert-…`: lockouts, break-glass, emergency accounts,
/// stolen sessions), so the security manager's dashboard lists the latest alerts without reading
/// the whole trail; alerts already in the trail are indexed once (canonical entries begin with
/// `{"action":`).
const ALERTS: &str = r#"
{TRAIL_ALERTS}
INSERT INTO audit_alerts (idx, time) SELECT idx, time FROM audit_entries WHERE {ALERT_ENTRY}
ON CONFLICT DO NOTHING;
"#;

/// Step 4: a seal on every configuration version (#25): HMAC-SHA256 under a key derived from the
/// node's master key, written by the one configuration path in the same transaction as the
/// version. A version without a valid seal was written around the path (with `sqlite3` or
/// `psql`) and is never served. Append-only like the versions.
const SEALS: &str = r#"
CREATE TABLE IF NOT EXISTS config_seals (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    version {INT} NOT NULL,
    seal TEXT NOT NULL,
    PRIMARY KEY (kind, key, version)
);
"#;

/// Step 5 on SQLite: substrings through an index (#29). `:contains` and a token's `:text` were
/// `LIKE '%v%'`, a scan of every row of the parameter. `sp_text` is the dictionary of the
/// distinct string and token-text values of three or more characters per type and parameter
/// (shorter ones cannot hold a three-character needle), and `sp_text_fts` an FTS5 trigram index
/// over it: a search finds the values holding the needle there, then their rows through the
/// value indexes (`sp_string_value`, `sp_token_text`). Triggers on the value tables keep the
/// dictionary — a value enters with its first row and leaves with its last (nothing of a deleted
/// or purged record stays behind) — so every writer (a record, a reindex, a restore) keeps it
/// without knowing it exists, and a value repeated on every resource (a security label's
/// display) costs one probe, not one entry, per row. Needles of one or two characters still
/// scan (a trigram cannot serve them).
const SUBSTRINGS_SQLITE: &str = r#"
CREATE TABLE IF NOT EXISTS sp_text (n INTEGER PRIMARY KEY, type TEXT NOT NULL, param TEXT NOT NULL, norm TEXT NOT NULL, UNIQUE (type, param, norm));
CREATE INDEX IF NOT EXISTS sp_token_text ON sp_token (type, param, text) WHERE length(text) >= 3;
CREATE VIRTUAL TABLE IF NOT EXISTS sp_text_fts USING fts5(norm, content='sp_text', content_rowid='n', tokenize='trigram case_sensitive 1');
CREATE TRIGGER IF NOT EXISTS sp_text_fts_in AFTER INSERT ON sp_text
BEGIN INSERT INTO sp_text_fts (rowid, norm) VALUES (new.n, new.norm); END;
CREATE TRIGGER IF NOT EXISTS sp_text_fts_out AFTER DELETE ON sp_text
BEGIN INSERT INTO sp_text_fts (sp_text_fts, rowid, norm) VALUES ('delete', old.n, old.norm); END;
CREATE TRIGGER IF NOT EXISTS sp_string_text_in AFTER INSERT ON sp_string WHEN length(new.norm) >= 3
BEGIN INSERT INTO sp_text (type, param, norm) VALUES (new.type, new.param, new.norm) ON CONFLICT DO NOTHING; END;
CREATE TRIGGER IF NOT EXISTS sp_string_text_out AFTER DELETE ON sp_string WHEN length(old.norm) >= 3
BEGIN DELETE FROM sp_text WHERE type = old.type AND param = old.param AND norm = old.norm
    AND NOT EXISTS (SELECT 1 FROM sp_string WHERE type = old.type AND param = old.param AND norm = old.norm); END;
CREATE TRIGGER IF NOT EXISTS sp_token_text_in AFTER INSERT ON sp_token WHEN length(new.text) >= 3
BEGIN INSERT INTO sp_text (type, param, norm) VALUES (new.type, new.param, new.text) ON CONFLICT DO NOTHING; END;
CREATE TRIGGER IF NOT EXISTS sp_token_text_out AFTER DELETE ON sp_token WHEN length(old.text) >= 3
BEGIN DELETE FROM sp_text WHERE type = old.type AND param = old.param AND norm = old.text
    AND NOT EXISTS (SELECT 1 FROM sp_token WHERE type = old.type AND param = old.param AND text = old.text AND length(text) >= 3); END;
INSERT INTO sp_text (type, param, norm) SELECT DISTINCT type, param, norm FROM sp_string WHERE length(norm) >= 3 ON CONFLICT DO NOTHING;
INSERT INTO sp_text (type, param, norm) SELECT DISTINCT type, param, text FROM sp_token WHERE length(text) >= 3 ON CONFLICT DO NOTHING;
"#;

/// Step 5 on PostgreSQL: the same through `pg_trgm`, whose GIN indexes serve `LIKE '%v%'` on the
/// value columns directly. Creating the extension needs the CREATE privilege on the database;
/// a node without it (and without the extension) starts all the same and scans, and says so.
const SUBSTRINGS_POSTGRES: &str = r#"
DO $$ BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'pg_trgm is not available (%): :contains and :text will scan', SQLERRM;
END $$;
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX IF NOT EXISTS sp_string_trgm ON sp_string USING gin (norm gin_trgm_ops);
        CREATE INDEX IF NOT EXISTS sp_token_trgm ON sp_token USING gin (text gin_trgm_ops);
    END IF;
END $$;
"#;

/// Step 6: the date and number tables indexed by their upper bound too (#29). A search for values
/// above a point (`gt`, `ge`, `eb`; a date's `ge` since step 7) compares the row's `hi`, which the value index
/// (ordered by `lo`) cannot seek: `Observation?value-quantity=gt500` read every row of the
/// parameter (0.17–0.6 s at 1M resources), `date=gt2030` and `date=eb2021` likewise. About 1 % of
/// the store; built once when a store is opened (~4 s per million rows).
const RANGES: &str = r#"
CREATE INDEX IF NOT EXISTS sp_date_high ON sp_date (type, param, hi);
CREATE INDEX IF NOT EXISTS sp_number_high ON sp_number (type, param, hi);
"#;

/// Step 7: every date and number row has `lo <= hi` (#29). The searches bound a row's `lo` from
/// above by the search's upper end when the row's `hi` is (an `eq`, a date's `ge` and `le`), so
/// the value index reads the range `[L, H]` rather than every row from `L` on
/// (`Observation?date=2026-10-08`, `value-quantity=50`); that holds only when no row ends before
/// it starts. A Period or Range written so (R4's per-1 and rng-2 forbid it) is indexed since as
/// the range between its two ends (a composite's second value too); this step turns the rows
/// stored before.
const ORDERED_RANGES: &str = r#"
UPDATE sp_date SET lo = hi, hi = lo WHERE lo > hi;
UPDATE sp_number SET lo = hi, hi = lo WHERE lo > hi;
UPDATE sp_composite SET lo = hi, hi = lo WHERE lo > hi;
"#;

/// Step 8 on PostgreSQL: extended statistics on the index tables' correlated columns (#29). The
/// planner took `type`, `param` and `target_type` for independent, so it expected a quarter of
/// the `Observation` `subject` rows pointing at a `Patient` that there are (23,756 against
/// 96,000 at 100k resources) and joined a chain by hashing every such row — the density probe
/// and the walk of `Observation?subject:Patient.name=…` 44–48 ms each; with these statistics
/// it walks by key, 5.8 and 8.4 ms. A code goes with its parameter likewise (`Patient` `gender`
/// `female`: 9 rows expected of 1,973; `subject:Patient.gender=female` walked 94 → 11 ms).
/// `ANALYZE` builds them (and the node's own `ANALYZE` after writes keeps them); SQLite's
/// planner needs nothing of the kind.
const STATISTICS_POSTGRES: &str = r#"
CREATE STATISTICS IF NOT EXISTS sp_string_stats (dependencies, ndistinct, mcv) ON type, param FROM sp_string;
CREATE STATISTICS IF NOT EXISTS sp_token_stats (dependencies, ndistinct, mcv) ON type, param, system, code FROM sp_token;
CREATE STATISTICS IF NOT EXISTS sp_date_stats (dependencies, ndistinct, mcv) ON type, param FROM sp_date;
CREATE STATISTICS IF NOT EXISTS sp_number_stats (dependencies, ndistinct, mcv) ON type, param FROM sp_number;
CREATE STATISTICS IF NOT EXISTS sp_ref_stats (dependencies, ndistinct, mcv) ON type, param, target_type FROM sp_ref;
CREATE STATISTICS IF NOT EXISTS sp_composite_stats (dependencies, ndistinct, mcv) ON type, param, system, code FROM sp_composite;
ANALYZE sp_string, sp_token, sp_date, sp_number, sp_ref, sp_composite;
"#;

/// Step 9 on SQLite: the audit trail in a file of its own (#29). Every audited request commits
/// its entry, and every commit to a SQLite file empties the page cache of every other connection
/// to that file — so each read and search began with cold b-tree pages, copied again from the
/// OS. The trail's tables now live in `audit.db`, attached to every connection as `audit` (the
/// unqualified names below resolve there), and an entry that only records a request (a read, a
/// search, a sign-in) leaves `mamori.db` untouched. The store adapter copies the tables into
/// `audit.db` and makes the copy durable before this step drops them here
/// ([`audit_trail_sqlite`]).
///
/// A transaction that writes both files is not atomic across them (SQLite in WAL mode commits
/// each file on its own), so an entry written beside a change to `mamori.db` (a record, a
/// configuration version) is also kept in `audit_pending`, in the same file as the change: if
/// the change committed and its entry did not (a crash between the two files' commits, a power
/// loss that kept one file's log and not the other's), the next append copies it into the trail
/// at the index it was given. A pending row is dropped once its entry is known durable in
/// `audit.db`.
const AUDIT_FILE_SQLITE: &str = r#"
DROP TABLE IF EXISTS main.audit_alerts;
DROP TABLE IF EXISTS main.audit_state;
DROP TABLE IF EXISTS main.audit_checkpoints;
DROP TABLE IF EXISTS main.audit_tiles;
DROP TABLE IF EXISTS main.audit_entries;
CREATE TABLE IF NOT EXISTS audit_pending (idx INTEGER PRIMARY KEY, time INTEGER NOT NULL, entry BLOB NOT NULL, alert INTEGER NOT NULL);
"#;

/// The audit trail's tables (steps 1 and 3 make them in the main database; `{A}` is where a
/// database name goes, step 9 puts them in `audit`).
const TRAIL: &str = r#"CREATE TABLE IF NOT EXISTS {A}audit_entries (
    idx {INT} PRIMARY KEY,
    time {INT} NOT NULL,
    entry {BLOB} NOT NULL
);
CREATE INDEX IF NOT EXISTS {A}audit_by_time ON audit_entries (time);
CREATE TABLE IF NOT EXISTS {A}audit_tiles (
    level {INT} NOT NULL,
    idx {INT} NOT NULL,
    hashes {BLOB} NOT NULL,
    PRIMARY KEY (level, idx)
){NOROWID};
CREATE TABLE IF NOT EXISTS {A}audit_checkpoints (
    size {INT} PRIMARY KEY,
    created {INT} NOT NULL,
    note TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS {A}audit_state (name TEXT PRIMARY KEY, value {INT} NOT NULL);
"#;

/// The alert index of the trail (step 3), as [`TRAIL`].
const TRAIL_ALERTS: &str = "CREATE TABLE IF NOT EXISTS {A}audit_alerts (idx {INT} PRIMARY KEY, time {INT} NOT NULL);";

/// The audit trail's tables and guards in the attached `audit` database (SQLite, step 9), as the
/// first steps made them in the main file; every statement can run again.
pub fn audit_trail_sqlite() -> String {
    let tables = format!("{TRAIL}{TRAIL_ALERTS}\n").replace("{A}", "audit.");
    render(Dialect::Sqlite, &tables) + &audit_guards_sqlite()
}

/// The audit tables' guards on SQLite, in the attached `audit` database (a trigger lives in its
/// table's file).
fn audit_guards_sqlite() -> String {
    guarded_tables()
        .into_iter()
        .filter(|(table, _)| AUDIT_TABLES.contains(table))
        .map(|(table, (name, message))| append_only(Dialect::Sqlite, &format!("audit.{name}"), table, message))
        .collect()
}

/// The guarded tables kept in `audit.db` on SQLite (step 9).
const AUDIT_TABLES: [&str; 2] = ["audit_entries", "audit_alerts"];

/// The tables only one dialect has: SQLite's substring index (PostgreSQL indexes the value
/// columns themselves) and the audit entries written beside a change, kept until their entry
/// is durable in `audit.db` (step 9).
pub const SQLITE_ONLY: [&str; 2] = ["sp_text", "audit_pending"];

/// An append-only table of attributed versions of `(kind, key)` entries (configuration, workflow
/// state): one shape for every such table.
const VERSIONS: &str = "CREATE TABLE IF NOT EXISTS {TABLE} (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    version {INT} NOT NULL,
    value TEXT,
    changed_by TEXT NOT NULL,
    changed_at {INT} NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (kind, key, version)
);";

fn render(d: Dialect, template: &str) -> String {
    let (seq, int, boolean, fals, real, blob, key, norowid) = match d {
        Dialect::Sqlite => {
            ("INTEGER PRIMARY KEY AUTOINCREMENT", "INTEGER", "INTEGER", "0", "REAL", "BLOB", "TEXT", " WITHOUT ROWID")
        }
        Dialect::Postgres => (
            "BIGSERIAL PRIMARY KEY",
            "BIGINT",
            "BOOLEAN",
            "FALSE",
            "DOUBLE PRECISION",
            "BYTEA",
            "TEXT COLLATE \"C\"",
            "",
        ),
    };
    template
        .replace("{TRAIL}", &TRAIL.replace("{A}", ""))
        .replace("{TRAIL_ALERTS}", &TRAIL_ALERTS.replace("{A}", ""))
        .replace("{VERSIONS:config_versions}", &VERSIONS.replace("{TABLE}", "config_versions"))
        .replace("{VERSIONS:workflow_versions}", &VERSIONS.replace("{TABLE}", "workflow_versions"))
        .replace("{SEQ}", seq)
        .replace("{INT}", int)
        .replace("{BOOL}", boolean)
        .replace("{FALSE}", fals)
        .replace("{REAL}", real)
        .replace("{BLOB}", blob)
        .replace("{KEY}", key)
        .replace("{NOROWID}", norowid)
}

/// Triggers that refuse UPDATE and DELETE (and TRUNCATE, on PostgreSQL) on an append-only table
/// (真正性). `name` prefixes the triggers' names.
fn append_only(d: Dialect, name: &str, table: &str, message: &str) -> String {
    match d {
        Dialect::Sqlite => format!(
            "CREATE TRIGGER IF NOT EXISTS {name}_no_update BEFORE UPDATE ON {table}
             BEGIN SELECT RAISE(ABORT, '{message}'); END;
             CREATE TRIGGER IF NOT EXISTS {name}_no_delete BEFORE DELETE ON {table}
             BEGIN SELECT RAISE(ABORT, '{message}'); END;\n"
        ),
        Dialect::Postgres => format!(
            "CREATE OR REPLACE TRIGGER {name}_no_change BEFORE UPDATE OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION mamori_refuse('{message}');
             CREATE OR REPLACE TRIGGER {name}_no_truncate BEFORE TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION mamori_refuse('{message}');\n"
        ),
    }
}

/// Versions are immutable: no UPDATE ever, DELETE only inside a purge ([`Dialect::purge_guard`]).
fn versions_guard(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => {
            "CREATE TRIGGER IF NOT EXISTS versions_no_update BEFORE UPDATE ON versions
             BEGIN SELECT RAISE(ABORT, 'versions are immutable'); END;
             CREATE TRIGGER IF NOT EXISTS versions_no_delete BEFORE DELETE ON versions
             WHEN (SELECT value FROM store_flags WHERE name = 'purge') IS NULL
             BEGIN SELECT RAISE(ABORT, 'versions are removed only by a purge'); END;\n"
        }
        Dialect::Postgres => {
            "CREATE OR REPLACE FUNCTION mamori_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION '%', TG_ARGV[0]; END $$;
             CREATE OR REPLACE FUNCTION mamori_versions_delete() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF current_setting('mamori.purge', true) IS DISTINCT FROM 'on' THEN
                     RAISE EXCEPTION 'versions are removed only by a purge';
                 END IF;
                 RETURN OLD;
             END $$;
             CREATE OR REPLACE TRIGGER versions_no_update BEFORE UPDATE ON versions FOR EACH ROW EXECUTE FUNCTION mamori_refuse('versions are immutable');
             CREATE OR REPLACE TRIGGER versions_no_delete BEFORE DELETE ON versions FOR EACH ROW EXECUTE FUNCTION mamori_versions_delete();
             CREATE OR REPLACE TRIGGER versions_no_truncate BEFORE TRUNCATE ON versions FOR EACH STATEMENT EXECUTE FUNCTION mamori_refuse('versions are immutable');\n"
        }
    }
}

/// The migration steps for a dialect, in order.
pub fn steps(d: Dialect) -> Vec<String> {
    let mut base = render(d, BASE);
    base.push_str(versions_guard(d));
    base.push_str(&append_only(d, "config", "config_versions", "configuration history is append-only"));
    base.push_str(&append_only(d, "audit", "audit_entries", "the audit trail is append-only"));
    let mut workflow = render(d, WORKFLOW);
    workflow.push_str(&append_only(d, "workflow", "workflow_versions", "workflow history is append-only"));
    let mut alerts = render(d, ALERTS).replace(
        "{ALERT_ENTRY}",
        match d {
            Dialect::Sqlite => "substr(entry, 1, 17) = CAST(char(123) || '\"action\":\"alert-' AS BLOB)",
            Dialect::Postgres => {
                "substring(entry from 1 for 17) = convert_to(chr(123) || '\"action\":\"alert-', 'UTF8')"
            }
        },
    );
    alerts.push_str(&append_only(d, "alerts", "audit_alerts", "the audit trail is append-only"));
    let mut seals = render(d, SEALS);
    seals.push_str(&append_only(d, "seals", "config_seals", "configuration seals are append-only"));
    let substrings = match d {
        Dialect::Sqlite => SUBSTRINGS_SQLITE,
        Dialect::Postgres => SUBSTRINGS_POSTGRES,
    };
    let statistics = match d {
        Dialect::Sqlite => "-- nothing on SQLite",
        Dialect::Postgres => STATISTICS_POSTGRES,
    };
    let audit_file = match d {
        Dialect::Sqlite => AUDIT_FILE_SQLITE,
        Dialect::Postgres => "-- nothing on PostgreSQL: the trail stays in the database",
    };
    vec![
        base,
        workflow,
        alerts,
        seals,
        substrings.to_string(),
        RANGES.to_string(),
        ORDERED_RANGES.to_string(),
        statistics.to_string(),
        audit_file.to_string(),
    ]
}

/// The step that moves the audit trail into `audit.db` on SQLite (the adapter copies it first).
pub const AUDIT_FILE_STEP: i64 = 9;

/// Whether a logical dump (a backup generation) made at schema `version` loads into a store of
/// this build: made at this build's schema, or at the step before [`AUDIT_FILE_STEP`], which
/// changes no table's rows (it moves the trail to a file of its own on SQLite and does nothing
/// on PostgreSQL), so generations taken before it stay restorable.
pub fn loads_into_this_build(version: i64) -> bool {
    let now = i64::try_from(steps(Dialect::Sqlite).len()).unwrap_or(i64::MAX);
    version == now || (now == AUDIT_FILE_STEP && version == AUDIT_FILE_STEP - 1)
}

/// Every guard trigger of the schema (append-only tables, immutable versions), as statements
/// that can run again: `mamori` puts back a trigger that was dropped or disabled (#25).
pub fn guards(d: Dialect) -> String {
    let mut g = versions_guard(d).to_string();
    for (table, (name, message)) in guarded_tables().into_iter().skip(1) {
        if d == Dialect::Sqlite && AUDIT_TABLES.contains(&table) {
            continue;
        }
        g.push_str(&append_only(d, name, table, message));
    }
    if d == Dialect::Sqlite {
        g.push_str(&audit_guards_sqlite());
    }
    g
}

/// The guarded tables with their triggers' prefix and message (`versions` first, whose guard
/// differs: it allows a purge).
pub fn guarded_tables() -> [(&'static str, (&'static str, &'static str)); 6] {
    [
        ("versions", ("versions", "versions are immutable")),
        ("config_versions", ("config", "configuration history is append-only")),
        ("audit_entries", ("audit", "the audit trail is append-only")),
        ("workflow_versions", ("workflow", "workflow history is append-only")),
        ("audit_alerts", ("alerts", "the audit trail is append-only")),
        ("config_seals", ("seals", "configuration seals are append-only")),
    ]
}

/// The names of the guard triggers the schema must have, sorted.
pub fn guard_names(d: Dialect) -> Vec<String> {
    let mut names: Vec<String> = guards(d)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("CREATE TRIGGER IF NOT EXISTS ").or_else(|| l.strip_prefix("CREATE OR REPLACE TRIGGER "))
        })
        .filter_map(|rest| rest.split(' ').next())
        // `audit.audit_no_update`: the trigger's name without its database.
        .map(|name| name.rsplit('.').next().unwrap_or(name).to_string())
        .collect();
    names.sort();
    names
}

/// Applies the steps not applied yet, inside the caller's transaction (which the adapter holds
/// exclusively: several processes may start at once). `now` is recorded with each step.
pub fn migrate(c: &mut dyn Conn, now: i64) -> Result<(), Error> {
    migrate_until(c, now, i64::MAX)
}

/// The schema version a store has reached (0 for a new one).
fn version(c: &mut dyn Conn) -> Result<i64, Error> {
    c.batch("CREATE TABLE IF NOT EXISTS mamori_schema (version BIGINT PRIMARY KEY, applied BIGINT NOT NULL)")?;
    Ok(c.one("SELECT COALESCE(MAX(version), 0) FROM mamori_schema", &[])?.map(|r| r.int(0)).transpose()?.unwrap_or(0))
}

/// As [`migrate`], applying no step after `last`.
pub fn migrate_until(c: &mut dyn Conn, now: i64, last: i64) -> Result<(), Error> {
    let have = version(c)?;
    for (i, step) in steps(c.dialect()).iter().enumerate() {
        let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
        if version > have && version <= last {
            c.batch(step)?;
            c.execute("INSERT INTO mamori_schema (version, applied) VALUES (?1, ?2)", &vals![version, now])?;
            tracing::info!(version, dialect = c.dialect().name(), "schema migrated");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generations taken before the trail moved to its own file stay restorable; any other
    /// schema is refused (its tables may differ).
    #[test]
    fn a_dump_from_before_the_audit_file_loads() {
        assert_eq!(steps(Dialect::Sqlite).len(), steps(Dialect::Postgres).len());
        assert!(loads_into_this_build(AUDIT_FILE_STEP));
        assert!(loads_into_this_build(AUDIT_FILE_STEP - 1));
        assert!(!loads_into_this_build(AUDIT_FILE_STEP - 2));
        assert!(!loads_into_this_build(AUDIT_FILE_STEP + 1));
    }

    #[test]
    fn every_placeholder_is_rendered() {
        for d in [Dialect::Sqlite, Dialect::Postgres] {
            for step in steps(d) {
                assert!(!step.contains('{'), "{d:?}: {step}");
            }
        }
    }

    #[test]
    fn both_dialects_have_the_same_tables() {
        let tables = |d: Dialect| -> Vec<String> {
            steps(d)
                .join("\n")
                .lines()
                .filter_map(|l| l.trim().strip_prefix("CREATE TABLE IF NOT EXISTS "))
                .map(|l| l.split([' ', '(']).next().unwrap_or_default().to_string())
                .collect()
        };
        let shared = |d: Dialect| -> Vec<String> {
            tables(d).into_iter().filter(|t| !SQLITE_ONLY.contains(&t.as_str())).collect()
        };
        assert_eq!(shared(Dialect::Sqlite), tables(Dialect::Postgres));
        assert!(tables(Dialect::Sqlite).len() > 20);
    }

    #[test]
    fn every_append_only_table_has_its_guards_in_both_dialects() {
        let sqlite = guard_names(Dialect::Sqlite);
        let pg = guard_names(Dialect::Postgres);
        assert!(sqlite.contains(&"seals_no_update".to_string()), "{sqlite:?}");
        assert!(pg.contains(&"seals_no_truncate".to_string()), "{pg:?}");
        assert!(sqlite.len() >= 12 && pg.len() >= 12, "{sqlite:?} {pg:?}");
        // What the migration installs is what the repair installs.
        let migrated = steps(Dialect::Postgres).join("\n");
        for name in &pg {
            assert!(migrated.contains(&format!("TRIGGER {name} ")), "{name}");
        }
    }
}
