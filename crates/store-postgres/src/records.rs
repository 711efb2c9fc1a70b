//! [`mamori_records::Store`] on PostgreSQL: the same tables and search SQL as the embedded store.

use std::sync::Arc;

use mamori_records::search::{Hit, IndexValue, SearchQuery, SortVal, sql as search_sql, sql::Arg};
use mamori_records::{
    BreakGlassGrant, EntryStatus, HistoryQuery, IndexEntries, Method, RecordError, ResourceId, ResourceType, Store,
    StoreError, Timestamp, Tx, VersionRecord,
};
use tokio_postgres::Row;
use tokio_postgres::types::Type;

use crate::{Error, Lease, P, PgStore, params};

/// A stored value that did not decode (a row of another shape, an unknown method): corrupt.
fn se(e: impl std::fmt::Display) -> StoreError {
    let msg = e.to_string();
    tracing::error!(error = %msg, "record store failure");
    StoreError::Corrupt(msg)
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        let msg = match &e {
            Error::Pg(p) => Error::text(p),
            _ => e.to_string(),
        };
        tracing::error!(error = %msg, "record store failure");
        e.kind()(msg)
    }
}

impl From<Error> for RecordError {
    fn from(e: Error) -> Self {
        RecordError::Store(e.into())
    }
}

const COLS: &str = "type, id, version, last_updated, method, body, sha256, entered_by, pending_author, server_written, patient, classes, lab";

fn row_to_version(r: &Row) -> Result<VersionRecord, StoreError> {
    let rt: String = r.try_get(0).map_err(se)?;
    let id: String = r.try_get(1).map_err(se)?;
    let version: i64 = r.try_get(2).map_err(se)?;
    let method: String = r.try_get(4).map_err(se)?;
    let body: Option<String> = r.try_get(5).map_err(se)?;
    let sha: Vec<u8> = r.try_get(6).map_err(se)?;
    let pending: Option<String> = r.try_get(8).map_err(se)?;
    let classes: String = r.try_get(11).map_err(se)?;
    Ok(VersionRecord {
        resource_type: ResourceType::parse(&rt).map_err(se)?,
        id: ResourceId::parse(&id).map_err(se)?,
        version: u64::try_from(version).map_err(se)?,
        last_updated: Timestamp(r.try_get(3).map_err(se)?),
        method: Method::parse(&method).ok_or_else(|| se(format!("unknown method `{method}`")))?,
        body: body.map(Arc::from),
        content_sha256: sha.try_into().map_err(|_| se("hash is not 32 bytes"))?,
        entered_by: r.try_get(7).map_err(se)?,
        status: pending.map_or(EntryStatus::Final, |author| EntryStatus::Pending { author }),
        server_written: r.try_get(9).map_err(se)?,
        patient: r.try_get(10).map_err(se)?,
        classes: classes.split(' ').filter(|c| !c.is_empty()).map(str::to_string).collect(),
        lab: r.try_get(12).map_err(se)?,
    })
}

/// `?N` placeholders (the search SQL's, written for SQLite) → PostgreSQL's `$N`.
pub(crate) fn dollar(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == '?' && !quoted && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// Binds a search argument as the type PostgreSQL inferred for its placeholder.
fn bind(a: &Arg, ty: Option<&Type>) -> P {
    match (a, ty) {
        (Arg::Int(i), Some(t)) if *t == Type::FLOAT8 || *t == Type::FLOAT4 || *t == Type::NUMERIC => {
            // Microseconds and search integers fit a double exactly (below 2^53).
            #[allow(clippy::cast_precision_loss)]
            Box::new(*i as f64)
        }
        (Arg::Int(i), Some(t)) if *t == Type::INT4 => {
            Box::new(i32::try_from(*i).unwrap_or(if *i < 0 { i32::MIN } else { i32::MAX }))
        }
        (Arg::Int(i), Some(t)) if *t == Type::TEXT || *t == Type::VARCHAR => Box::new(i.to_string()),
        (Arg::Int(i), _) => Box::new(*i),
        (Arg::Real(r), Some(t)) if *t == Type::INT8 => {
            // A decimal bound against an integer column: the nearest integers keep the comparison.
            #[allow(clippy::cast_possible_truncation)]
            Box::new(r.round() as i64)
        }
        (Arg::Real(r), _) => Box::new(*r),
        (Arg::Text(t), _) => Box::new(t.clone()),
    }
}

/// A sort key's value as stored, whatever its column type.
fn sort_val(r: &Row, i: usize) -> SortVal {
    let ty = r.columns().get(i).map(|c| c.type_().clone());
    match ty {
        Some(t) if t == Type::INT8 => SortVal::Int(r.try_get::<_, Option<i64>>(i).ok().flatten().unwrap_or(0)),
        Some(t) if t == Type::INT4 => {
            SortVal::Int(i64::from(r.try_get::<_, Option<i32>>(i).ok().flatten().unwrap_or(0)))
        }
        Some(t) if t == Type::FLOAT8 => SortVal::Real(r.try_get::<_, Option<f64>>(i).ok().flatten().unwrap_or(0.0)),
        _ => SortVal::Text(r.try_get::<_, Option<String>>(i).ok().flatten().unwrap_or_default()),
    }
}

/// An integer column of any width.
fn int(r: &Row, i: usize) -> Result<i64, StoreError> {
    match r.columns().get(i).map(|c| c.type_().clone()) {
        Some(t) if t == Type::INT4 => r.try_get::<_, i32>(i).map(i64::from).map_err(se),
        Some(t) if t == Type::BOOL => r.try_get::<_, bool>(i).map(i64::from).map_err(se),
        _ => r.try_get::<_, i64>(i).map_err(se),
    }
}

/// Index values are kept to their first [`INDEX_BYTES`] bytes (on a character boundary):
/// PostgreSQL's b-tree rows hold at most about 2.7 kB, and a key holds up to three values. Values
/// longer than this (a ValueSet's description, say) are found by their beginning.
const INDEX_BYTES: usize = 600;

fn clip(s: &str) -> String {
    if s.len() <= INDEX_BYTES {
        return s.to_string();
    }
    let mut end = INDEX_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_string()
}

/// Removes a resource's index entries (`$1` type, `$2` id).
const CLEAR: [&str; 8] = [
    "DELETE FROM identifier_index WHERE type = $1 AND id = $2",
    "DELETE FROM care_index WHERE type = $1 AND id = $2",
    "DELETE FROM sp_string WHERE type = $1 AND id = $2",
    "DELETE FROM sp_token WHERE type = $1 AND id = $2",
    "DELETE FROM sp_date WHERE type = $1 AND id = $2",
    "DELETE FROM sp_number WHERE type = $1 AND id = $2",
    "DELETE FROM sp_ref WHERE type = $1 AND id = $2",
    "DELETE FROM sp_composite WHERE type = $1 AND id = $2",
];

struct PgTx<'l, 's> {
    l: &'l mut Lease<'s>,
}

impl PgTx<'_, '_> {
    fn one(&mut self, sql: &str, p: Vec<P>) -> Result<Option<VersionRecord>, StoreError> {
        self.l.opt(sql, p)?.map(|r| row_to_version(&r)).transpose()
    }

    fn dynamic(&mut self, sql: &search_sql::Sql) -> Result<Vec<Row>, StoreError> {
        let text = dollar(&sql.text);
        let types = self.l.param_types(&text)?;
        let args: Vec<P> = sql.args.iter().enumerate().map(|(i, a)| bind(a, types.get(i))).collect();
        Ok(self.l.query(&text, args)?)
    }

    /// The statements removing every index entry of a resource.
    fn clear_index(t: &str, i: &str, out: &mut Vec<(&'static str, Vec<P>)>) {
        for sql in CLEAR {
            out.push((sql, params![t.to_string(), i.to_string()]));
        }
    }

    /// The statements replacing every index entry of a resource (none left for a deletion).
    fn index_statements(
        rt: &ResourceType,
        id: &ResourceId,
        deleted: bool,
        fresh: bool,
        index: &IndexEntries,
        out: &mut Vec<(&'static str, Vec<P>)>,
    ) {
        let (t, i) = (rt.as_str().to_string(), id.as_str().to_string());
        if !fresh {
            Self::clear_index(&t, &i, out);
        }
        if deleted {
            return;
        }
        for tok in &index.identifiers {
            out.push((
                "INSERT INTO identifier_index (type, id, system, value) VALUES ($1, $2, $3, $4)",
                params![t.clone(), i.clone(), clip(tok.system.as_deref().unwrap_or_default()), clip(&tok.value)],
            ));
        }
        if matches!(t.as_str(), "CareTeam" | "Encounter" | "Patient") {
            for c in &index.care {
                out.push((
                    "INSERT INTO care_index (type, id, patient, member) VALUES ($1, $2, $3, $4)",
                    params![t.clone(), i.clone(), c.patient.clone(), c.member.clone()],
                ));
            }
        }
        for row in &index.search {
            let p = row.param.clone();
            out.push(match &row.value {
                IndexValue::Str { norm, exact } => (
                    "INSERT INTO sp_string (type, id, param, norm, exact) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    params![t.clone(), i.clone(), p, clip(norm), clip(exact)],
                ),
                IndexValue::Token { system, code, text } => (
                    "INSERT INTO sp_token (type, id, param, system, code, text) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    params![t.clone(), i.clone(), p, clip(system), clip(code), clip(text)],
                ),
                IndexValue::Date { lo, hi } => (
                    "INSERT INTO sp_date (type, id, param, lo, hi) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    params![t.clone(), i.clone(), p, *lo, *hi],
                ),
                IndexValue::Number { lo, hi, system, code } => (
                    "INSERT INTO sp_number (type, id, param, lo, hi, system, code) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                    params![t.clone(), i.clone(), p, *lo, *hi, clip(system), clip(code)],
                ),
                IndexValue::Ref { ty, id: target, url } => (
                    "INSERT INTO sp_ref (type, id, param, target_type, target_id, url) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    params![t.clone(), i.clone(), p, clip(ty), clip(target), clip(url)],
                ),
                IndexValue::Composite { system, code, second } => {
                    let (s_system, s_code, lo, hi): (String, String, Option<f64>, Option<f64>) = match second.as_ref() {
                        IndexValue::Token { system, code, .. } => (system.clone(), code.clone(), None, None),
                        IndexValue::Str { norm, .. } => (String::new(), norm.clone(), None, None),
                        IndexValue::Number { lo, hi, system, code } => {
                            (system.clone(), code.clone(), Some(*lo), Some(*hi))
                        }
                        // Microseconds fit a double exactly (below 2^53).
                        #[allow(clippy::cast_precision_loss)]
                        IndexValue::Date { lo, hi } => (String::new(), String::new(), Some(*lo as f64), Some(*hi as f64)),
                        IndexValue::Ref { .. } | IndexValue::Composite { .. } => continue,
                    };
                    (
                        "INSERT INTO sp_composite (type, id, param, system, code, s_system, s_code, lo, hi) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                        params![t.clone(), i.clone(), p, clip(system), clip(code), clip(&s_system), clip(&s_code), lo, hi],
                    )
                }
            });
        }
    }

    fn visit(&mut self, sql: &str, f: &mut dyn FnMut(&VersionRecord) -> bool) -> Result<(), StoreError> {
        // In pages by `seq`, so a whole-store walk never holds every row in memory.
        let mut after = 0i64;
        loop {
            let rows = self.l.query(sql, params![after])?;
            let Some(last) = rows.last() else { return Ok(()) };
            after = last.try_get::<_, i64>(13).map_err(se)?;
            for r in &rows {
                if !f(&row_to_version(r)?) {
                    return Ok(());
                }
            }
        }
    }
}

impl Tx for PgTx<'_, '_> {
    fn current(&mut self, rt: &ResourceType, id: &ResourceId) -> Result<Option<VersionRecord>, StoreError> {
        self.one(
            &format!("SELECT {COLS} FROM versions WHERE seq = (SELECT seq FROM resources WHERE type = $1 AND id = $2)"),
            params![rt.as_str().to_string(), id.as_str().to_string()],
        )
    }

    fn version(
        &mut self,
        rt: &ResourceType,
        id: &ResourceId,
        version: u64,
    ) -> Result<Option<VersionRecord>, StoreError> {
        let v = i64::try_from(version).unwrap_or(i64::MAX);
        self.one(
            &format!("SELECT {COLS} FROM versions WHERE type = $1 AND id = $2 AND version = $3"),
            params![rt.as_str().to_string(), id.as_str().to_string(), v],
        )
    }

    fn history(&mut self, q: &HistoryQuery) -> Result<(Vec<VersionRecord>, u64), StoreError> {
        let mut cond = vec!["TRUE".to_string()];
        let mut args: Vec<P> = Vec::new();
        if let Some(rt) = &q.resource_type {
            args.push(Box::new(rt.as_str().to_string()));
            cond.push(format!("type = ${}", args.len()));
        }
        if let Some(id) = &q.id {
            args.push(Box::new(id.as_str().to_string()));
            cond.push(format!("id = ${}", args.len()));
        }
        if let Some(s) = q.since {
            args.push(Box::new(s.0));
            cond.push(format!("last_updated >= ${}", args.len()));
        }
        if let Some(b) = q.before {
            args.push(Box::new(b.0));
            cond.push(format!("last_updated <= ${}", args.len()));
        }
        let wh = cond.join(" AND ");
        let limit = i64::try_from(q.count).unwrap_or(i64::MAX);
        let offset = i64::try_from(q.offset).unwrap_or(i64::MAX);
        // The count and the page in one statement, so both see the same rows.
        let sql = format!(
            "SELECT {COLS}, COUNT(*) OVER () FROM versions WHERE {wh} ORDER BY seq DESC LIMIT {limit} OFFSET {offset}"
        );
        let rows = self.l.query(&sql, args)?;
        let total = match rows.first() {
            Some(r) => int(r, 13)?,
            None if offset > 0 => {
                // Past the end: count separately.
                let mut again: Vec<P> = Vec::new();
                if let Some(rt) = &q.resource_type {
                    again.push(Box::new(rt.as_str().to_string()));
                }
                if let Some(id) = &q.id {
                    again.push(Box::new(id.as_str().to_string()));
                }
                if let Some(s) = q.since {
                    again.push(Box::new(s.0));
                }
                if let Some(b) = q.before {
                    again.push(Box::new(b.0));
                }
                self.l
                    .opt(&format!("SELECT COUNT(*) FROM versions WHERE {wh}"), again)?
                    .map_or(Ok(0), |r| int(&r, 0))?
            }
            None => 0,
        };
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(row_to_version(r)?);
        }
        Ok((out, u64::try_from(total).unwrap_or(0)))
    }

    fn find_by_identifier(
        &mut self,
        rt: &ResourceType,
        system: Option<&str>,
        value: &str,
    ) -> Result<Vec<ResourceId>, StoreError> {
        let rows = match system {
            None => self.l.query(
                "SELECT DISTINCT id FROM identifier_index WHERE type = $1 AND value = $2",
                params![rt.as_str().to_string(), value.to_string()],
            )?,
            Some(sys) => self.l.query(
                "SELECT DISTINCT id FROM identifier_index WHERE type = $1 AND value = $2 AND system = $3",
                params![rt.as_str().to_string(), value.to_string(), sys.to_string()],
            )?,
        };
        rows.iter().map(|r| ResourceId::parse(&r.try_get::<_, String>(0).map_err(se)?).map_err(se)).collect()
    }

    fn latest_timestamp(&mut self) -> Result<Option<Timestamp>, StoreError> {
        let r = self.l.opt("SELECT MAX(last_updated) FROM versions", params![])?;
        Ok(r.and_then(|r| r.try_get::<_, Option<i64>>(0).ok().flatten()).map(Timestamp))
    }

    fn put(&mut self, v: &VersionRecord, index: &IndexEntries) -> Result<(), StoreError> {
        let pending = match &v.status {
            EntryStatus::Final => None,
            EntryStatus::Pending { author } => Some(author.clone()),
        };
        let version = i64::try_from(v.version).map_err(se)?;
        // The version, the current-version pointer and the index rows leave in one flight.
        let mut out: Vec<(&'static str, Vec<P>)> = vec![(
            "WITH v AS (
                INSERT INTO versions (type, id, version, last_updated, method, body, sha256, entered_by, pending_author, server_written, patient, classes, lab)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING type, id, seq)
             INSERT INTO resources (type, id, seq) SELECT type, id, seq FROM v
             ON CONFLICT (type, id) DO UPDATE SET seq = excluded.seq",
            params![
                v.resource_type.as_str().to_string(),
                v.id.as_str().to_string(),
                version,
                v.last_updated.0,
                v.method.as_str().to_string(),
                v.body.as_deref().map(str::to_string),
                v.content_sha256.to_vec(),
                v.entered_by.clone(),
                pending,
                v.server_written,
                v.patient.clone(),
                v.classes.join(" "),
                v.lab,
            ],
        )];
        // A first version has no earlier entries to replace (a purge removes them all).
        Self::index_statements(&v.resource_type, &v.id, v.is_deleted(), v.version == 1, index, &mut out);
        Ok(self.l.execute_many(out)?)
    }

    fn in_care(&mut self, patient: &str, member: &str) -> Result<bool, StoreError> {
        let r = self.l.opt(
            "SELECT EXISTS (SELECT 1 FROM care_index WHERE patient = $1 AND member = $2)",
            params![patient.to_string(), member.to_string()],
        )?;
        Ok(r.is_some_and(|r| r.try_get::<_, bool>(0).unwrap_or(false)))
    }

    fn break_glass_active(&mut self, username: &str, patient: &str, now: Timestamp) -> Result<bool, StoreError> {
        let r = self.l.opt(
            "SELECT EXISTS (SELECT 1 FROM break_glass WHERE username = $1 AND patient = $2 AND expires > $3 AND granted <= $3)",
            params![username.to_string(), patient.to_string(), now.0],
        )?;
        Ok(r.is_some_and(|r| r.try_get::<_, bool>(0).unwrap_or(false)))
    }

    fn add_break_glass(&mut self, g: &BreakGlassGrant) -> Result<(), StoreError> {
        self.l.execute(
            "INSERT INTO break_glass (id, username, patient, reason, granted, expires) VALUES ($1, $2, $3, $4, $5, $6)",
            params![g.id.clone(), g.username.clone(), g.patient.clone(), g.reason.clone(), g.granted.0, g.expires.0],
        )?;
        Ok(())
    }

    fn break_glass_grants(&mut self, open_only: bool) -> Result<Vec<BreakGlassGrant>, StoreError> {
        let sql = format!(
            "SELECT id, username, patient, reason, granted, expires, reviewed_at, reviewed_by, review_note FROM break_glass {} ORDER BY granted DESC",
            if open_only { "WHERE reviewed_at IS NULL" } else { "" }
        );
        let rows = self.l.query(&sql, params![])?;
        rows.iter()
            .map(|r| {
                let reviewed: Option<i64> = r.try_get(6).map_err(se)?;
                let by: Option<String> = r.try_get(7).map_err(se)?;
                let note: Option<String> = r.try_get(8).map_err(se)?;
                Ok(BreakGlassGrant {
                    id: r.try_get(0).map_err(se)?,
                    username: r.try_get(1).map_err(se)?,
                    patient: r.try_get(2).map_err(se)?,
                    reason: r.try_get(3).map_err(se)?,
                    granted: Timestamp(r.try_get(4).map_err(se)?),
                    expires: Timestamp(r.try_get(5).map_err(se)?),
                    review: reviewed.map(|t| (Timestamp(t), by.unwrap_or_default(), note.unwrap_or_default())),
                })
            })
            .collect()
    }

    fn close_break_glass(&mut self, id: &str, by: &str, note: &str, at: Timestamp) -> Result<bool, StoreError> {
        let n = self.l.execute(
            "UPDATE break_glass SET reviewed_at = $2, reviewed_by = $3, review_note = $4 WHERE id = $1 AND reviewed_at IS NULL",
            params![id.to_string(), at.0, by.to_string(), note.to_string()],
        )?;
        Ok(n == 1)
    }

    fn for_each_version(&mut self, f: &mut dyn FnMut(&VersionRecord) -> bool) -> Result<(), StoreError> {
        self.visit(&format!("SELECT {COLS}, seq FROM versions WHERE seq > $1 ORDER BY seq LIMIT 1000"), f)
    }

    fn purge(&mut self, rt: &ResourceType, id: &ResourceId) -> Result<u64, StoreError> {
        let (t, i) = (rt.as_str().to_string(), id.as_str().to_string());
        // The delete trigger lets versions go only inside a purge's own transaction.
        self.l.batch("SET LOCAL mamori.purge = 'on'")?;
        let n = self.l.execute("DELETE FROM versions WHERE type = $1 AND id = $2", params![t.clone(), i.clone()])?;
        self.l.batch("SET LOCAL mamori.purge = 'off'")?;
        self.l.execute("DELETE FROM resources WHERE type = $1 AND id = $2", params![t.clone(), i.clone()])?;
        let mut clear = Vec::new();
        Self::clear_index(&t, &i, &mut clear);
        self.l.execute_many(clear)?;
        Ok(n)
    }

    fn search(&mut self, q: &SearchQuery, limit: usize) -> Result<Vec<Hit>, StoreError> {
        let sql = search_sql::search(q, limit);
        let rows = self.dynamic(&sql)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut keys = Vec::with_capacity(q.sort.len());
            for i in 0..q.sort.len() {
                let n = int(r, 1 + 2 * i)?;
                keys.push((n != 0, sort_val(r, 2 + 2 * i)));
            }
            out.push(Hit { id: r.try_get(0).map_err(se)?, keys });
        }
        Ok(out)
    }

    fn search_count(&mut self, q: &SearchQuery) -> Result<u64, StoreError> {
        let sql = search_sql::count(q);
        let rows = self.dynamic(&sql)?;
        let n = rows.first().map_or(Ok(0), |r| int(r, 0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn references_from(
        &mut self,
        rt: &ResourceType,
        id: &ResourceId,
        param: Option<&str>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self.l.query(
            "SELECT DISTINCT target_type, target_id FROM sp_ref WHERE type = $1 AND id = $2 AND ($3::text IS NULL OR param = $3) AND target_id <> ''",
            params![rt.as_str().to_string(), id.as_str().to_string(), param.map(str::to_string)],
        )?;
        rows.iter().map(|r| Ok((r.try_get(0).map_err(se)?, r.try_get(1).map_err(se)?))).collect()
    }

    fn references_to(
        &mut self,
        source: &str,
        param: Option<&str>,
        target_type: &str,
        target_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows = self.l.query(
            "SELECT DISTINCT id FROM sp_ref WHERE type = $1 AND ($2::text IS NULL OR param = $2) AND target_id = $4 AND target_type = $3",
            params![source.to_string(), param.map(str::to_string), target_type.to_string(), target_id.to_string()],
        )?;
        rows.iter().map(|r| r.try_get(0).map_err(se)).collect()
    }

    fn replace_index(&mut self, rt: &ResourceType, id: &ResourceId, index: &IndexEntries) -> Result<(), StoreError> {
        let mut out = Vec::new();
        Self::index_statements(rt, id, false, false, index, &mut out);
        Ok(self.l.execute_many(out)?)
    }

    fn for_each_current(&mut self, f: &mut dyn FnMut(&VersionRecord) -> bool) -> Result<(), StoreError> {
        let cols = COLS.split(", ").map(|c| format!("v.{c}")).collect::<Vec<_>>().join(", ");
        self.visit(
            &format!(
                "SELECT {cols}, r.seq FROM resources r JOIN versions v ON v.seq = r.seq WHERE v.method <> 'delete' AND r.seq > $1 ORDER BY r.seq LIMIT 1000"
            ),
            f,
        )
    }

    fn index_version(&mut self) -> Result<Option<String>, StoreError> {
        Ok(self.l.opt("SELECT value FROM store_flags WHERE name = 'index_version'", params![])?.map(|r| r.get(0)))
    }

    fn set_index_version(&mut self, v: &str) -> Result<(), StoreError> {
        self.l.execute(
            "INSERT INTO store_flags (name, value) VALUES ('index_version', $1) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            params![v.to_string()],
        )?;
        Ok(())
    }

    fn append_audit(&mut self, record: mamori_audit::AuditRecord) -> Result<u64, StoreError> {
        Ok(crate::audit::insert(self.l, record)?)
    }
}

impl Store for PgStore {
    fn write(&self, f: &mut (dyn FnMut(&mut dyn Tx) -> Result<(), RecordError> + Send)) -> Result<(), RecordError> {
        let mut l = self.lease().map_err(StoreError::from)?;
        l.write(|l| f(&mut PgTx { l }))
    }

    fn read(&self, f: &mut dyn FnMut(&mut dyn Tx) -> Result<(), RecordError>) -> Result<(), RecordError> {
        let mut l = self.lease().map_err(StoreError::from)?;
        l.read(|l| f(&mut PgTx { l }))
    }
}

#[cfg(test)]
mod tests {
    use super::dollar;

    #[test]
    fn placeholders_become_dollars_outside_literals() {
        assert_eq!(
            dollar("a = ?1 AND b LIKE ?12 ESCAPE '\\' AND c = '?3'"),
            "a = $1 AND b LIKE $12 ESCAPE '\\' AND c = '?3'"
        );
    }
}
