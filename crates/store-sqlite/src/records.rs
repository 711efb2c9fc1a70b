//! [`mamori_records::Store`] on SQLite.

use std::sync::Arc;

use mamori_records::search::{Hit, IndexValue, SearchQuery, SortVal, sql as search_sql, sql::Arg};
use mamori_records::{
    BreakGlassGrant, EntryStatus, HistoryQuery, IndexEntries, Method, RecordError, ResourceId, ResourceType, Store,
    StoreError, Timestamp, Tx, VersionRecord,
};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use crate::{Error, SqliteStore};

/// A record-store failure, logged, with its kind: SQLite's own errors and this crate's are
/// classified ([`Error::kind`]); anything else (a value that did not parse) is corrupt data.
fn se<E: std::fmt::Display + 'static>(e: E) -> StoreError {
    let msg = e.to_string();
    tracing::error!(error = %msg, "record store failure");
    let any = &e as &dyn std::any::Any;
    let kind = if let Some(e) = any.downcast_ref::<rusqlite::Error>() {
        crate::sqlite_kind(e)
    } else if let Some(e) = any.downcast_ref::<Error>() {
        e.kind()
    } else {
        StoreError::Corrupt
    };
    kind(msg)
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        se(e)
    }
}

const COLS: &str = "type, id, version, last_updated, method, body, sha256, entered_by, pending_author, server_written, patient, classes, lab";

/// Runs a version query (selecting `COLS`) and hands each row to `f` until it returns `false`.
fn visit_versions(
    st: &mut rusqlite::Statement<'_>,
    f: &mut dyn FnMut(&VersionRecord) -> bool,
) -> Result<(), StoreError> {
    let mut rows = st.query([]).map_err(se)?;
    while let Some(r) = rows.next().map_err(se)? {
        let v = row_to_version(r).map_err(se)??;
        if !f(&v) {
            break;
        }
    }
    Ok(())
}

fn row_to_version(r: &Row<'_>) -> rusqlite::Result<Result<VersionRecord, StoreError>> {
    let rt: String = r.get(0)?;
    let id: String = r.get(1)?;
    let version: i64 = r.get(2)?;
    let method: String = r.get(4)?;
    let body: Option<String> = r.get(5)?;
    let sha: Vec<u8> = r.get(6)?;
    let pending: Option<String> = r.get(8)?;
    let server_written: i64 = r.get(9)?;
    let patient: Option<String> = r.get(10)?;
    let classes: String = r.get(11)?;
    let lab: i64 = r.get(12)?;
    Ok((|| {
        Ok(VersionRecord {
            resource_type: ResourceType::parse(&rt).map_err(se)?,
            id: ResourceId::parse(&id).map_err(se)?,
            version: u64::try_from(version).map_err(se)?,
            last_updated: Timestamp(r.get(3).map_err(se)?),
            method: Method::parse(&method).ok_or_else(|| se(format!("unknown method `{method}`")))?,
            body: body.map(Arc::from),
            content_sha256: sha.try_into().map_err(|_| se("hash is not 32 bytes"))?,
            entered_by: r.get(7).map_err(se)?,
            status: pending.map_or(EntryStatus::Final, |author| EntryStatus::Pending { author }),
            server_written: server_written != 0,
            patient,
            classes: classes.split(' ').filter(|c| !c.is_empty()).map(str::to_string).collect(),
            lab: lab != 0,
        })
    })())
}

struct SqlTx<'c> {
    c: &'c Connection,
}

impl SqlTx<'_> {
    fn one(&self, sql: &str, p: impl rusqlite::Params) -> Result<Option<VersionRecord>, StoreError> {
        let mut st = self.c.prepare_cached(sql).map_err(se)?;
        st.query_row(p, row_to_version).optional().map_err(se)?.transpose()
    }
}

const SEARCH_TABLES: [&str; 6] = ["sp_string", "sp_token", "sp_date", "sp_number", "sp_ref", "sp_composite"];

fn sql_args(args: &[Arg]) -> Vec<rusqlite::types::Value> {
    args.iter()
        .map(|a| match a {
            Arg::Int(i) => rusqlite::types::Value::Integer(*i),
            Arg::Real(r) => rusqlite::types::Value::Real(*r),
            Arg::Text(t) => rusqlite::types::Value::Text(t.clone()),
        })
        .collect()
}

fn sort_val(v: rusqlite::types::ValueRef<'_>) -> SortVal {
    match v {
        rusqlite::types::ValueRef::Integer(i) => SortVal::Int(i),
        rusqlite::types::ValueRef::Real(r) => SortVal::Real(r),
        rusqlite::types::ValueRef::Text(t) => SortVal::Text(String::from_utf8_lossy(t).into_owned()),
        rusqlite::types::ValueRef::Null | rusqlite::types::ValueRef::Blob(_) => SortVal::Int(0),
    }
}

impl SqlTx<'_> {
    /// Removes every index entry of a resource.
    fn clear_index(&self, t: &str, i: &str) -> Result<(), StoreError> {
        for table in ["identifier_index", "care_index"].into_iter().chain(SEARCH_TABLES) {
            self.c
                .prepare_cached(&format!("DELETE FROM {table} WHERE type = ?1 AND id = ?2"))
                .map_err(se)?
                .execute(params![t, i])
                .map_err(se)?;
        }
        Ok(())
    }

    /// Replaces every index entry of a resource: identifiers, care links (for the types that
    /// make them) and search rows. A deletion leaves none.
    fn write_index(
        &self,
        rt: &ResourceType,
        id: &ResourceId,
        deleted: bool,
        fresh: bool,
        index: &IndexEntries,
    ) -> Result<(), StoreError> {
        let (t, i) = (rt.as_str(), id.as_str());
        if !fresh {
            self.clear_index(t, i)?;
        }
        if !deleted {
            let mut st = self
                .c
                .prepare_cached("INSERT INTO identifier_index (type, id, system, value) VALUES (?1, ?2, ?3, ?4)")
                .map_err(se)?;
            for tok in &index.identifiers {
                st.execute(params![t, i, tok.system.as_deref().unwrap_or(""), tok.value]).map_err(se)?;
            }
            if matches!(t, "CareTeam" | "Encounter" | "Patient") {
                let mut st = self
                    .c
                    .prepare_cached("INSERT INTO care_index (type, id, patient, member) VALUES (?1, ?2, ?3, ?4)")
                    .map_err(se)?;
                for l in &index.care {
                    st.execute(params![t, i, l.patient, l.member]).map_err(se)?;
                }
            }
        }
        if deleted {
            return Ok(());
        }
        for row in &index.search {
            let p = row.param.as_str();
            match &row.value {
                IndexValue::Str { norm, exact } => self
                    .c
                    .prepare_cached("INSERT OR IGNORE INTO sp_string (type, id, param, norm, exact) VALUES (?1, ?2, ?3, ?4, ?5)")
                    .map_err(se)?
                    .execute(params![t, i, p, norm, exact]),
                IndexValue::Token { system, code, text } => self
                    .c
                    .prepare_cached("INSERT OR IGNORE INTO sp_token (type, id, param, system, code, text) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
                    .map_err(se)?
                    .execute(params![t, i, p, system, code, text]),
                IndexValue::Date { lo, hi } => self
                    .c
                    .prepare_cached("INSERT OR IGNORE INTO sp_date (type, id, param, lo, hi) VALUES (?1, ?2, ?3, ?4, ?5)")
                    .map_err(se)?
                    .execute(params![t, i, p, lo, hi]),
                IndexValue::Number { lo, hi, system, code } => self
                    .c
                    .prepare_cached("INSERT OR IGNORE INTO sp_number (type, id, param, lo, hi, system, code) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
                    .map_err(se)?
                    .execute(params![t, i, p, lo, hi, system, code]),
                IndexValue::Ref { ty, id: target, url } => self
                    .c
                    .prepare_cached("INSERT OR IGNORE INTO sp_ref (type, id, param, target_type, target_id, url) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
                    .map_err(se)?
                    .execute(params![t, i, p, ty, target, url]),
                IndexValue::Composite { system, code, second } => {
                    let (s_system, s_code, lo, hi): (&str, &str, Option<f64>, Option<f64>) = match second.as_ref() {
                        IndexValue::Token { system, code, .. } => (system, code, None, None),
                        IndexValue::Str { norm, .. } => ("", norm, None, None),
                        IndexValue::Number { lo, hi, system, code } => (system, code, Some(*lo), Some(*hi)),
                        // Microseconds fit a double exactly (below 2^53).
                        #[allow(clippy::cast_precision_loss)]
                        IndexValue::Date { lo, hi } => ("", "", Some(*lo as f64), Some(*hi as f64)),
                        IndexValue::Ref { .. } | IndexValue::Composite { .. } => continue,
                    };
                    self.c
                        .prepare_cached("INSERT INTO sp_composite (type, id, param, system, code, s_system, s_code, lo, hi) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")
                        .map_err(se)?
                        .execute(params![t, i, p, system, code, s_system, s_code, lo, hi])
                }
            }
            .map_err(se)?;
        }
        Ok(())
    }
}

impl Tx for SqlTx<'_> {
    fn current(&mut self, rt: &ResourceType, id: &ResourceId) -> Result<Option<VersionRecord>, StoreError> {
        self.one(
            &format!("SELECT {COLS} FROM versions WHERE seq = (SELECT seq FROM resources WHERE type = ?1 AND id = ?2)"),
            params![rt.as_str(), id.as_str()],
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
            &format!("SELECT {COLS} FROM versions WHERE type = ?1 AND id = ?2 AND version = ?3"),
            params![rt.as_str(), id.as_str(), v],
        )
    }

    fn history(&mut self, q: &HistoryQuery) -> Result<(Vec<VersionRecord>, u64), StoreError> {
        // Server-written Provenance is listed in system and type history like any resource.
        let mut cond = vec!["1 = 1".to_string()];
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(rt) = &q.resource_type {
            args.push(rt.as_str().to_string().into());
            cond.push(format!("type = ?{}", args.len()));
        }
        if let Some(id) = &q.id {
            args.push(id.as_str().to_string().into());
            cond.push(format!("id = ?{}", args.len()));
        }
        if let Some(s) = q.since {
            args.push(s.0.into());
            cond.push(format!("last_updated >= ?{}", args.len()));
        }
        if let Some(b) = q.before {
            args.push(b.0.into());
            cond.push(format!("last_updated <= ?{}", args.len()));
        }
        let wh = cond.join(" AND ");
        let total: i64 = self
            .c
            .prepare_cached(&format!("SELECT COUNT(*) FROM versions WHERE {wh}"))
            .map_err(se)?
            .query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0))
            .map_err(se)?;
        let limit = i64::try_from(q.count).unwrap_or(i64::MAX);
        let offset = i64::try_from(q.offset).unwrap_or(i64::MAX);
        let sql = format!("SELECT {COLS} FROM versions WHERE {wh} ORDER BY seq DESC LIMIT {limit} OFFSET {offset}");
        let mut st = self.c.prepare_cached(&sql).map_err(se)?;
        let rows = st.query_map(rusqlite::params_from_iter(args.iter()), row_to_version).map_err(se)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r.map_err(se)??);
        }
        Ok((out, u64::try_from(total).unwrap_or(0)))
    }

    fn find_by_identifier(
        &mut self,
        rt: &ResourceType,
        system: Option<&str>,
        value: &str,
    ) -> Result<Vec<ResourceId>, StoreError> {
        let mut out = Vec::new();
        let ids: Vec<String> = match system {
            None => {
                let mut st = self
                    .c
                    .prepare_cached("SELECT DISTINCT id FROM identifier_index WHERE type = ?1 AND value = ?2")
                    .map_err(se)?;
                st.query_map(params![rt.as_str(), value], |r| r.get(0))
                    .map_err(se)?
                    .collect::<Result<_, _>>()
                    .map_err(se)?
            }
            Some(sys) => {
                let mut st = self
                    .c
                    .prepare_cached(
                        "SELECT DISTINCT id FROM identifier_index WHERE type = ?1 AND value = ?2 AND system = ?3",
                    )
                    .map_err(se)?;
                st.query_map(params![rt.as_str(), value, sys], |r| r.get(0))
                    .map_err(se)?
                    .collect::<Result<_, _>>()
                    .map_err(se)?
            }
        };
        for id in ids {
            out.push(ResourceId::parse(&id).map_err(se)?);
        }
        Ok(out)
    }

    fn latest_timestamp(&mut self) -> Result<Option<Timestamp>, StoreError> {
        let v: Option<i64> = self
            .c
            .prepare_cached("SELECT MAX(last_updated) FROM versions")
            .map_err(se)?
            .query_row([], |r| r.get(0))
            .map_err(se)?;
        Ok(v.map(Timestamp))
    }

    fn put(&mut self, v: &VersionRecord, index: &IndexEntries) -> Result<(), StoreError> {
        let pending = match &v.status {
            EntryStatus::Final => None,
            EntryStatus::Pending { author } => Some(author.as_str()),
        };
        let version = i64::try_from(v.version).map_err(se)?;
        self.c
            .prepare_cached(
                "INSERT INTO versions (type, id, version, last_updated, method, body, sha256, entered_by, pending_author, server_written, patient, classes, lab)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )
            .map_err(se)?
            .execute(params![
                v.resource_type.as_str(),
                v.id.as_str(),
                version,
                v.last_updated.0,
                v.method.as_str(),
                v.body.as_deref(),
                &v.content_sha256[..],
                v.entered_by,
                pending,
                i64::from(v.server_written),
                v.patient.as_deref(),
                v.classes.join(" "),
                i64::from(v.lab),
            ])
            .map_err(se)?;
        let seq = self.c.last_insert_rowid();
        self.c
            .prepare_cached("INSERT INTO resources (type, id, seq) VALUES (?1, ?2, ?3) ON CONFLICT (type, id) DO UPDATE SET seq = excluded.seq")
            .map_err(se)?
            .execute(params![v.resource_type.as_str(), v.id.as_str(), seq])
            .map_err(se)?;
        // A first version has no earlier entries to replace (a purge removes them all).
        self.write_index(&v.resource_type, &v.id, v.is_deleted(), v.version == 1, index)?;
        Ok(())
    }

    fn in_care(&mut self, patient: &str, member: &str) -> Result<bool, StoreError> {
        self.c
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM care_index WHERE patient = ?1 AND member = ?2)")
            .map_err(se)?
            .query_row(params![patient, member], |r| r.get(0))
            .map_err(se)
    }

    fn break_glass_active(&mut self, username: &str, patient: &str, now: Timestamp) -> Result<bool, StoreError> {
        self.c
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM break_glass WHERE username = ?1 AND patient = ?2 AND expires > ?3 AND granted <= ?3)",
            )
            .map_err(se)?
            .query_row(params![username, patient, now.0], |r| r.get(0))
            .map_err(se)
    }

    fn add_break_glass(&mut self, g: &BreakGlassGrant) -> Result<(), StoreError> {
        self.c
            .prepare_cached(
                "INSERT INTO break_glass (id, username, patient, reason, granted, expires) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(se)?
            .execute(params![g.id, g.username, g.patient, g.reason, g.granted.0, g.expires.0])
            .map_err(se)?;
        Ok(())
    }

    fn break_glass_grants(&mut self, open_only: bool) -> Result<Vec<BreakGlassGrant>, StoreError> {
        let sql = format!(
            "SELECT id, username, patient, reason, granted, expires, reviewed_at, reviewed_by, review_note FROM break_glass {} ORDER BY granted DESC",
            if open_only { "WHERE reviewed_at IS NULL" } else { "" }
        );
        let mut st = self.c.prepare(&sql).map_err(se)?;
        let rows = st
            .query_map([], |r| {
                let reviewed: Option<i64> = r.get(6)?;
                let by: Option<String> = r.get(7)?;
                let note: Option<String> = r.get(8)?;
                Ok(BreakGlassGrant {
                    id: r.get(0)?,
                    username: r.get(1)?,
                    patient: r.get(2)?,
                    reason: r.get(3)?,
                    granted: Timestamp(r.get(4)?),
                    expires: Timestamp(r.get(5)?),
                    review: reviewed.map(|t| (Timestamp(t), by.unwrap_or_default(), note.unwrap_or_default())),
                })
            })
            .map_err(se)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(se)
    }

    fn close_break_glass(&mut self, id: &str, by: &str, note: &str, at: Timestamp) -> Result<bool, StoreError> {
        let n = self
            .c
            .execute(
                "UPDATE break_glass SET reviewed_at = ?2, reviewed_by = ?3, review_note = ?4 WHERE id = ?1 AND reviewed_at IS NULL",
                params![id, at.0, by, note],
            )
            .map_err(se)?;
        Ok(n == 1)
    }

    fn for_each_version(&mut self, f: &mut dyn FnMut(&VersionRecord) -> bool) -> Result<(), StoreError> {
        let mut st = self.c.prepare(&format!("SELECT {COLS} FROM versions ORDER BY seq")).map_err(se)?;
        visit_versions(&mut st, f)
    }

    fn purge(&mut self, rt: &ResourceType, id: &ResourceId) -> Result<u64, StoreError> {
        let c = self.c;
        c.execute("INSERT INTO store_flags (name, value) VALUES ('purge', 'on')", []).map_err(se)?;
        let n = c
            .execute("DELETE FROM versions WHERE type = ?1 AND id = ?2", params![rt.as_str(), id.as_str()])
            .map_err(se)?;
        c.execute("DELETE FROM store_flags WHERE name = 'purge'", []).map_err(se)?;
        c.execute("DELETE FROM resources WHERE type = ?1 AND id = ?2", params![rt.as_str(), id.as_str()])
            .map_err(se)?;
        self.clear_index(rt.as_str(), id.as_str())?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn search(&mut self, q: &SearchQuery, limit: usize) -> Result<Vec<Hit>, StoreError> {
        let sql = search_sql::search(q, limit);
        let mut st = self.c.prepare_cached(&sql.text).map_err(se)?;
        let mut rows = st.query(rusqlite::params_from_iter(sql_args(&sql.args))).map_err(se)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(se)? {
            let mut keys = Vec::with_capacity(q.sort.len());
            for i in 0..q.sort.len() {
                let n: i64 = r.get(1 + 2 * i).map_err(se)?;
                keys.push((n != 0, sort_val(r.get_ref(2 + 2 * i).map_err(se)?)));
            }
            out.push(Hit { id: r.get(0).map_err(se)?, keys });
        }
        Ok(out)
    }

    fn search_count(&mut self, q: &SearchQuery) -> Result<u64, StoreError> {
        let sql = search_sql::count(q);
        let n: i64 = self
            .c
            .prepare_cached(&sql.text)
            .map_err(se)?
            .query_row(rusqlite::params_from_iter(sql_args(&sql.args)), |r| r.get(0))
            .map_err(se)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn references_from(
        &mut self,
        rt: &ResourceType,
        id: &ResourceId,
        param: Option<&str>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut st = self
            .c
            .prepare_cached(
                "SELECT DISTINCT target_type, target_id FROM sp_ref WHERE type = ?1 AND id = ?2 AND (?3 IS NULL OR param = ?3) AND target_id <> ''",
            )
            .map_err(se)?;
        st.query_map(params![rt.as_str(), id.as_str(), param], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(se)?
            .collect::<Result<_, _>>()
            .map_err(se)
    }

    fn references_to(
        &mut self,
        source: &str,
        param: Option<&str>,
        target_type: &str,
        target_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut st = self
            .c
            .prepare_cached(
                "SELECT DISTINCT id FROM sp_ref WHERE type = ?1 AND (?2 IS NULL OR param = ?2) AND target_id = ?4 AND target_type = ?3",
            )
            .map_err(se)?;
        st.query_map(params![source, param, target_type, target_id], |r| r.get(0))
            .map_err(se)?
            .collect::<Result<_, _>>()
            .map_err(se)
    }

    fn replace_index(&mut self, rt: &ResourceType, id: &ResourceId, index: &IndexEntries) -> Result<(), StoreError> {
        self.write_index(rt, id, false, false, index)
    }

    fn for_each_current(&mut self, f: &mut dyn FnMut(&VersionRecord) -> bool) -> Result<(), StoreError> {
        let cols = COLS.split(", ").map(|c| format!("v.{c}")).collect::<Vec<_>>().join(", ");
        let mut st = self
            .c
            .prepare(&format!(
                "SELECT {cols} FROM resources r JOIN versions v ON v.seq = r.seq WHERE v.method <> 'delete' ORDER BY r.seq"
            ))
            .map_err(se)?;
        visit_versions(&mut st, f)
    }

    fn index_version(&mut self) -> Result<Option<String>, StoreError> {
        self.c
            .query_row("SELECT value FROM store_flags WHERE name = 'index_version'", [], |r| r.get(0))
            .optional()
            .map_err(se)
    }

    fn set_index_version(&mut self, v: &str) -> Result<(), StoreError> {
        self.c
            .execute(
                "INSERT INTO store_flags (name, value) VALUES ('index_version', ?1) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![v],
            )
            .map_err(se)?;
        Ok(())
    }

    fn append_audit(&mut self, record: mamori_audit::AuditRecord) -> Result<u64, StoreError> {
        crate::audit::insert(self.c, record).map_err(se)
    }
}

impl Store for SqliteStore {
    fn write(&self, f: &mut (dyn FnMut(&mut dyn Tx) -> Result<(), RecordError> + Send)) -> Result<(), RecordError> {
        // Group commit: concurrent writes share one transaction and one fsync (writer.rs).
        self.writer.write(&mut |c| f(&mut SqlTx { c }), |e| RecordError::Store(se(e)))
    }

    fn read(&self, f: &mut dyn FnMut(&mut dyn Tx) -> Result<(), RecordError>) -> Result<(), RecordError> {
        let mut conn = self.reader().map_err(StoreError::from)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred).map_err(se)?;
        f(&mut SqlTx { c: &tx })?;
        tx.finish().map_err(se)?;
        Ok(())
    }
}
