//! [`mamori_records::Store`]: versions, the current-version pointer, the identifier, care and
//! search indexes, break-glass grants — one set of queries for every database.

use std::sync::Arc;

use mamori_records::search::{Cursor, Hit, IndexValue, SearchQuery, SortVal, sql as search_sql, sql::Arg};
use mamori_records::{
    BreakGlassGrant, EntryStatus, HistoryQuery, IndexEntries, Method, RecordError, ResourceId, ResourceType, Store,
    StoreError, Timestamp, Tx, VersionRecord,
};

use crate::{Conn, Db, Error, Row, SqlStore, Value, vals};

/// The arguments `first` followed by `ids` padded to a power of two with the last id, and the
/// placeholders of the ids (`?k, …`, after `first`'s): a few statement texts then serve every
/// number of ids, so the connections' statement caches keep them (a page's candidates, their
/// references).
fn id_list<'a>(mut first: Vec<Value<'a>>, ids: &'a [ResourceId]) -> (Vec<Value<'a>>, String) {
    let n = ids.len().next_power_of_two();
    let from = first.len() + 1;
    let last = ids.last().map_or("", |id| id.as_str());
    first.extend(ids.iter().map(|id| id.as_str()).chain(std::iter::repeat(last)).take(n).map(Value::from));
    let list = (from..from + n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
    (first, list)
}

/// A failure inside a record transaction, logged once.
fn se(e: Error) -> StoreError {
    tracing::error!(error = %e, "record store failure");
    e.into_store_error()
}

/// A stored value that did not decode: corrupt.
fn bad(e: impl std::fmt::Display) -> StoreError {
    se(Error::corrupt(e))
}

const COLS: &str = "type, id, version, last_updated, method, body, sha256, entered_by, pending_author, server_written, patient, classes, lab";
/// [`COLS`] of the `versions` table aliased `v`.
const V_COLS: &str = "v.type, v.id, v.version, v.last_updated, v.method, v.body, v.sha256, v.entered_by, v.pending_author, v.server_written, v.patient, v.classes, v.lab";

fn row_to_version(mut r: Row) -> Result<VersionRecord, StoreError> {
    let body = r.take_text(5).map_err(se)?;
    let method = r.take_string(4).map_err(se)?;
    let classes = r.take_string(11).map_err(se)?;
    Ok(VersionRecord {
        resource_type: ResourceType::parse(&r.take_string(0).map_err(se)?).map_err(bad)?,
        id: ResourceId::parse(&r.take_string(1).map_err(se)?).map_err(bad)?,
        version: r.uint(2).map_err(se)?,
        last_updated: Timestamp(r.int(3).map_err(se)?),
        method: Method::parse(&method).ok_or_else(|| bad(format!("unknown method `{method}`")))?,
        body: body.map(Arc::from),
        content_sha256: r.take_blob(6).map_err(se)?.try_into().map_err(|_| bad("hash is not 32 bytes"))?,
        entered_by: r.take_string(7).map_err(se)?,
        status: r.take_text(8).map_err(se)?.map_or(EntryStatus::Final, |author| EntryStatus::Pending { author }),
        server_written: r.bool(9).map_err(se)?,
        patient: r.take_text(10).map_err(se)?,
        classes: classes.split(' ').filter(|c| !c.is_empty()).map(str::to_string).collect(),
        lab: r.bool(12).map_err(se)?,
    })
}

fn arg(a: &Arg) -> Value<'_> {
    match a {
        Arg::Int(i) => Value::Int(*i),
        Arg::Real(r) => Value::Real(*r),
        Arg::Text(t) => Value::from(t.as_str()),
    }
}

fn sort_val(v: &Value<'_>) -> SortVal {
    match v {
        Value::Int(i) => SortVal::Int(*i),
        Value::Real(r) => SortVal::Real(*r),
        Value::Text(t) => SortVal::Text(t.to_string()),
        Value::Null | Value::Blob(_) => SortVal::Int(0),
    }
}

/// The index tables a resource has rows in.
#[cfg(test)]
const INDEX_TABLES: [&str; 8] =
    ["identifier_index", "care_index", "sp_string", "sp_token", "sp_date", "sp_number", "sp_ref", "sp_composite"];

/// Removes a resource's index entries (`?1` type, `?2` id).
const CLEAR: [&str; 8] = [
    "DELETE FROM identifier_index WHERE type = ?1 AND id = ?2",
    "DELETE FROM care_index WHERE type = ?1 AND id = ?2",
    "DELETE FROM sp_string WHERE type = ?1 AND id = ?2",
    "DELETE FROM sp_token WHERE type = ?1 AND id = ?2",
    "DELETE FROM sp_date WHERE type = ?1 AND id = ?2",
    "DELETE FROM sp_number WHERE type = ?1 AND id = ?2",
    "DELETE FROM sp_ref WHERE type = ?1 AND id = ?2",
    "DELETE FROM sp_composite WHERE type = ?1 AND id = ?2",
];

/// What [`RecordTx::merged`] found.
enum Merged {
    /// The page.
    Page(Vec<Row>),
    /// Not mergeable, and how to run the search instead.
    Instead(search_sql::How),
    /// Not a merged search: decide how to run it ([`RecordTx::how`]).
    Not,
}

/// One record transaction on a connection.
pub(crate) struct RecordTx<'c> {
    c: &'c mut dyn Conn,
    /// The audit clock's now, for entries appended in this transaction.
    now: i64,
    stamp: &'c std::sync::RwLock<Option<crate::AuditStamp>>,
    densities: &'c Densities,
}

/// How long a density probe's answer is kept ([`Densities`]).
const DENSITY_KEPT: std::time::Duration = std::time::Duration::from_secs(10);

/// At most this many probe answers are kept; past it the expired go, then all.
const DENSITIES_KEPT: usize = 1024;

/// The answers of recent density probes (`search_sql::walk_density`, `search_sql::time_density`),
/// kept for [`DENSITY_KEPT`] by the probe's text and arguments. A probe only chooses how a
/// search runs (walked or gathered — the same answer either way), never what it answers, so an
/// answer some seconds old costs at worst a slower plan while the data drifts across a bound.
/// Asked again — the next page, the same search from another client — the probe was the
/// largest part of a search: 21 % of the server's CPU under the 1M chain load
/// (`Observation?subject:Patient.name=…`: up to 5,000 references over ~100 patients' ranges).
/// Shared by every connection of the store, it says no more about other requesters than the
/// page caches the probe warms already do (a repeated probe is faster either way).
#[derive(Default)]
pub(crate) struct Densities(std::sync::Mutex<std::collections::HashMap<String, (Density, std::time::Instant)>>);

/// A probe's answer: dictionary values and rows (or versions), each up to its bound.
type Density = (i64, i64);

impl Densities {
    fn key(sql: &search_sql::Sql) -> String {
        format!("{}\u{0}{:?}", sql.text, sql.args)
    }

    fn get(&self, key: &str) -> Option<Density> {
        let kept = self.0.lock().ok()?;
        kept.get(key).filter(|(_, at)| at.elapsed() < DENSITY_KEPT).map(|(answer, _)| *answer)
    }

    fn put(&self, key: String, answer: Density) {
        let Ok(mut kept) = self.0.lock() else { return };
        if kept.len() >= DENSITIES_KEPT {
            kept.retain(|_, (_, at)| at.elapsed() < DENSITY_KEPT);
            if kept.len() >= DENSITIES_KEPT {
                kept.clear();
            }
        }
        kept.insert(key, (answer, std::time::Instant::now()));
    }
}

impl RecordTx<'_> {
    /// A value as the index keeps it: whole, or its first bytes (on a character boundary) where
    /// the dialect limits keys.
    fn clip<'s>(&self, s: &'s str) -> &'s str {
        match self.c.dialect().index_bytes() {
            Some(max) if s.len() > max => {
                let mut end = max;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.get(..end).unwrap_or_default()
            }
            _ => s,
        }
    }

    fn one(&mut self, sql: &str, p: &[Value<'_>]) -> Result<Option<VersionRecord>, StoreError> {
        self.c.one(sql, p).map_err(se)?.map(row_to_version).transpose()
    }

    fn ids(&mut self, sql: &str, p: &[Value<'_>]) -> Result<Vec<String>, StoreError> {
        self.c.query(sql, p).map_err(se)?.iter().map(|r| r.text(0).map_err(se)).collect()
    }

    fn exists(&mut self, sql: &str, p: &[Value<'_>]) -> Result<bool, StoreError> {
        Ok(self.c.one(sql, p).map_err(se)?.map(|r| r.bool(0)).transpose().map_err(se)?.unwrap_or(false))
    }

    /// Visits versions in pages by `seq` (the query selects `COLS, seq` after `?1`), so a
    /// whole-store walk never holds every row in memory.
    fn visit(&mut self, sql: &str, f: &mut dyn FnMut(&VersionRecord) -> bool) -> Result<(), StoreError> {
        let mut after = 0i64;
        loop {
            let rows = self.c.query(sql, &vals![after]).map_err(se)?;
            let Some(last) = rows.last() else { return Ok(()) };
            after = last.int(13).map_err(se)?;
            for r in rows {
                if !f(&row_to_version(r)?) {
                    return Ok(());
                }
            }
        }
    }

    /// The statements replacing every index entry of a resource (none left for a deletion),
    /// borrowing the values (SQLite binds them without a copy).
    fn index_statements<'a>(
        &self,
        rt: &'a ResourceType,
        id: &'a ResourceId,
        deleted: bool,
        fresh: bool,
        index: &'a IndexEntries,
        out: &mut Vec<(&'static str, Vec<Value<'a>>)>,
    ) {
        let (t, i) = (rt.as_str(), id.as_str());
        if !fresh {
            for sql in CLEAR {
                out.push((sql, Vec::from(vals![t, i])));
            }
        }
        if deleted {
            return;
        }
        let row = |rest: &[Value<'a>]| -> Vec<Value<'a>> {
            let mut v = Vec::with_capacity(2 + rest.len());
            v.extend([Value::from(t), Value::from(i)]);
            v.extend_from_slice(rest);
            v
        };
        for tok in &index.identifiers {
            out.push((
                "INSERT INTO identifier_index (type, id, system, value) VALUES (?1, ?2, ?3, ?4)",
                row(&vals![self.clip(tok.system.as_deref().unwrap_or_default()), self.clip(&tok.value)]),
            ));
        }
        if matches!(t, "CareTeam" | "Encounter" | "Patient") {
            for c in &index.care {
                out.push((
                    "INSERT INTO care_index (type, id, patient, member) VALUES (?1, ?2, ?3, ?4)",
                    row(&vals![c.patient.as_str(), c.member.as_str()]),
                ));
            }
        }
        for r in &index.search {
            let p = r.param.as_str();
            out.push(match &r.value {
                IndexValue::Str { norm, exact } => (
                    "INSERT INTO sp_string (type, id, param, norm, exact) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                    row(&vals![p, self.clip(norm), self.clip(exact)]),
                ),
                IndexValue::Token { system, code, text } => (
                    "INSERT INTO sp_token (type, id, param, system, code, text) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                    row(&vals![p, self.clip(system), self.clip(code), self.clip(text)]),
                ),
                IndexValue::Date { lo, hi } => (
                    "INSERT INTO sp_date (type, id, param, lo, hi) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                    row(&vals![p, *lo, *hi]),
                ),
                IndexValue::Number { lo, hi, system, code } => (
                    "INSERT INTO sp_number (type, id, param, lo, hi, system, code) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                    row(&vals![p, *lo, *hi, self.clip(system), self.clip(code)]),
                ),
                IndexValue::Ref { ty, id: target, url } => (
                    "INSERT INTO sp_ref (type, id, param, target_type, target_id, url) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                    row(&vals![p, self.clip(ty), self.clip(target), self.clip(url)]),
                ),
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
                    (
                        "INSERT INTO sp_composite (type, id, param, system, code, s_system, s_code, lo, hi) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                        row(&vals![p, self.clip(system), self.clip(code), self.clip(s_system), self.clip(s_code), lo, hi]),
                    )
                }
            });
        }
    }

    /// How to run `q` for a page of `limit` here: the dialect's substring index, and — when a
    /// walkable criterion (`search_sql::walk_density`) would drive it — whether it is dense enough to try walking the
    /// resources before gathering them (one bounded probe through the index decides;
    /// `search_sql::dense`).
    /// A `_lastUpdated` range that drives is probed whatever the page (`search_sql::time_density`):
    /// the versions it holds decide whether it is walked and how it is gathered
    /// (`search_sql::time_how`).
    fn how(&mut self, q: &SearchQuery, limit: usize) -> Result<search_sql::How, StoreError> {
        let subs = self.c.dialect().substrings();
        if let Some(sql) = search_sql::time_density(q, subs) {
            let (_, versions) = self.probe(&sql)?;
            return Ok(search_sql::time_how(q, limit, self.c.dialect().how(), versions));
        }
        let walk = match search_sql::walk_density(q, subs, limit) {
            search_sql::Density::NotWalkable => false,
            search_sql::Density::Short => true,
            search_sql::Density::Probe(sql) => {
                let (values, rows) = self.probe(&sql)?;
                search_sql::dense(values, rows)
            }
        };
        Ok(search_sql::How { walk, ..self.c.dialect().how() })
    }

    /// A density probe's one row: how many dictionary values and how many rows (or versions);
    /// a recent answer to the same probe is taken as it was ([`Densities`]).
    fn probe(&mut self, sql: &search_sql::Sql) -> Result<(i64, i64), StoreError> {
        let key = Densities::key(sql);
        if let Some(answer) = self.densities.get(&key) {
            return Ok(answer);
        }
        let rows = self.search_rows(sql)?;
        let r = rows.first().ok_or_else(|| bad("the density probe returned no row"))?;
        let answer = (r.int(0).map_err(se)?, r.int(1).map_err(se)?);
        self.densities.put(key, answer);
        Ok(answer)
    }

    /// `q`'s page merged by value (`search_sql::search_merged`) when a `:exact` criterion drives
    /// it (`search_sql::exact_arms`) or its substring criterion is held by few values, or, when
    /// it cannot be, how to run it instead — decided from the values just listed, so the
    /// dictionary is read once.
    fn merged(&mut self, q: &SearchQuery, limit: usize) -> Result<Merged, StoreError> {
        let subs = self.c.dialect().substrings();
        let arms = match search_sql::exact_arms(q, subs, limit) {
            Some(arms) => arms,
            None => {
                let Some(list) = search_sql::merge_values(q, subs, limit) else { return Ok(Merged::Not) };
                let values = self.texts(&list)?;
                if values.len() >= usize::try_from(search_sql::MERGE_VALUES).unwrap_or(usize::MAX) {
                    // More values than a merge reads: dense (`search_sql::dense`).
                    return Ok(Merged::Instead(search_sql::How { walk: true, ..self.c.dialect().how() }));
                }
                values.into_iter().map(search_sql::Arm::value).collect()
            }
        };
        Ok(match self.merged_page(q, limit, &arms)? {
            Some(rows) => Merged::Page(rows),
            None => Merged::Instead(self.c.dialect().how()),
        })
    }

    /// The page of a merge of `arms` (`search_sql::search_merged`), when it is exact: with the
    /// merged criterion alone a short page is (every range was read); other criteria may have
    /// left it short of matches the merge did not read (`None`).
    fn merged_page(
        &mut self,
        q: &SearchQuery,
        limit: usize,
        arms: &[search_sql::Arm],
    ) -> Result<Option<Vec<Row>>, StoreError> {
        let how = self.c.dialect().how();
        let rows = self.search_rows(&search_sql::search_merged(q, limit, how, arms))?;
        Ok((rows.len() >= limit || q.criteria.len() == 1).then_some(rows))
    }

    /// The first column of every row of `sql`, as text (a value listing).
    fn texts(&mut self, sql: &search_sql::Sql) -> Result<Vec<String>, StoreError> {
        self.search_rows(sql)?.iter().map(|r| r.text(0)).collect::<Result<Vec<_>, _>>().map_err(se)
    }

    /// `q`'s page as `how` says; a walk short of a page may have stopped at its bound (unless it
    /// read fewer resources than that, i.e. reached the last one), and then merges by value in
    /// parts or, where that cannot be, gathers instead.
    fn walk_or_gather(&mut self, q: &SearchQuery, limit: usize, how: search_sql::How) -> Result<Vec<Row>, StoreError> {
        let mut rows = self.search_rows(&search_sql::search(q, limit, how))?;
        if !how.walk {
            return Ok(rows);
        }
        // A walk short of a page walks on from the last resource it read (each walk's matches
        // follow the last's in the page's order), up to `search_sql::WALKS` walks — unless a
        // substring criterion can be merged by value instead.
        let mut from = q.clone();
        let backwards = q.cursor.as_ref().is_some_and(|c| c.backwards);
        for walks in 1.. {
            if rows.len() >= limit {
                return Ok(rows);
            }
            let Some(last) = self.walk_reach(&from)? else { return Ok(rows) };
            if walks == 1
                && let Some(rows) = self.merged_in_parts(q, limit)?
            {
                return Ok(rows);
            }
            if walks >= search_sql::WALKS {
                break;
            }
            from.cursor = Some(Cursor { keys: Vec::new(), id: last, backwards });
            rows.extend(self.search_rows(&search_sql::search(&from, limit - rows.len(), how))?);
        }
        self.search_rows(&search_sql::search(q, limit, search_sql::How { walk: false, ..how }))
    }

    /// `q`'s page merged by value when its substring criterion is held by too many values for
    /// one statement: every value is listed, each part of `search_sql::MERGE_VALUES` of them
    /// gives its own first page, and the page is the first `limit` of theirs — one seek per
    /// value and a page of rows per part, where gathering reads every row of every value and
    /// sorts them (for `name:contains=ako` among 128k patients, 3,381 values: ~16 ms against
    /// ~45 ms). `None` when `q` cannot be merged (`search_sql::merge_values_all`) or when other
    /// criteria left a part's page short (it may have stopped before a match).
    fn merged_in_parts(&mut self, q: &SearchQuery, limit: usize) -> Result<Option<Vec<Row>>, StoreError> {
        let Some(list) = search_sql::merge_values_all(q, self.c.dialect().substrings(), limit) else { return Ok(None) };
        let arms: Vec<search_sql::Arm> = self.texts(&list)?.into_iter().map(search_sql::Arm::value).collect();
        let part = usize::try_from(search_sql::MERGE_VALUES).unwrap_or(usize::MAX);
        let mut found = Vec::new();
        for arms in arms.chunks(part) {
            let Some(rows) = self.merged_page(q, limit, arms)? else { return Ok(None) };
            for r in rows {
                found.push((r.text(0).map_err(se)?, r));
            }
        }
        // Ids compare as SQLite's BINARY collation does (bytes); a page read backwards is in
        // descending order, as the statement gives it.
        found.sort_by(|a, b| a.0.cmp(&b.0));
        if q.cursor.as_ref().is_some_and(|c| c.backwards) {
            found.reverse();
        }
        found.dedup_by(|a, b| a.0 == b.0);
        found.truncate(limit);
        Ok(Some(found.into_iter().map(|(_, r)| r).collect()))
    }

    /// Where a walk of `q` stopped short of the type's end (`search_sql::walk_reach`): the last
    /// resource it read, or `None` when it read every resource after its cursor.
    fn walk_reach(&mut self, q: &SearchQuery) -> Result<Option<String>, StoreError> {
        let rows = self.search_rows(&search_sql::walk_reach(q))?;
        let Some(r) = rows.first() else { return Ok(None) };
        if r.int(0).map_err(se)? < search_sql::WALK_CANDIDATES {
            return Ok(None);
        }
        Ok(Some(r.text(1).map_err(se)?))
    }

    fn search_rows(&mut self, sql: &search_sql::Sql) -> Result<Vec<Row>, StoreError> {
        let args: Vec<Value<'_>> = sql.args.iter().map(arg).collect();
        self.c.query(&sql.text, &args).map_err(se)
    }
}

impl Tx for RecordTx<'_> {
    fn current(&mut self, rt: &ResourceType, id: &ResourceId) -> Result<Option<VersionRecord>, StoreError> {
        self.one(
            "SELECT type, id, version, last_updated, method, body, sha256, entered_by, pending_author, server_written, patient, classes, lab
             FROM versions WHERE seq = (SELECT seq FROM resources WHERE type = ?1 AND id = ?2)",
            &vals![rt.as_str(), id.as_str()],
        )
    }

    /// One statement for every id: `resources` joined to the current versions, with the ids
    /// padded to a power of two by repeating the last, so that a few statement texts serve every
    /// page size from the connections' statement caches (a prepare is a round trip on
    /// PostgreSQL).
    fn current_many(
        &mut self,
        rt: &ResourceType,
        ids: &[ResourceId],
    ) -> Result<Vec<Option<VersionRecord>>, StoreError> {
        let Some(last) = ids.last() else { return Ok(Vec::new()) };
        if ids.len() == 1 {
            return Ok(vec![self.current(rt, last)?]);
        }
        let (args, list) = id_list(vec![rt.as_str().into()], ids);
        let rows = self
            .c
            .query(
                &format!("SELECT {V_COLS} FROM resources r JOIN versions v ON v.seq = r.seq WHERE r.type = ?1 AND r.id IN ({list})"),
                &args,
            )
            .map_err(se)?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for r in rows {
            let v = row_to_version(r)?;
            found.insert(v.id.as_str().to_string(), v);
        }
        Ok(ids.iter().map(|id| found.get(id.as_str()).cloned()).collect())
    }

    fn version(
        &mut self,
        rt: &ResourceType,
        id: &ResourceId,
        version: u64,
    ) -> Result<Option<VersionRecord>, StoreError> {
        let v = i64::try_from(version).unwrap_or(i64::MAX);
        self.one(
            "SELECT type, id, version, last_updated, method, body, sha256, entered_by, pending_author, server_written, patient, classes, lab
             FROM versions WHERE type = ?1 AND id = ?2 AND version = ?3",
            &vals![rt.as_str(), id.as_str(), v],
        )
    }

    fn history(&mut self, q: &HistoryQuery) -> Result<(Vec<VersionRecord>, u64), StoreError> {
        // Server-written Provenance is listed in system and type history like any resource.
        let mut cond = vec!["1 = 1".to_string()];
        let mut args: Vec<Value<'_>> = Vec::new();
        if let Some(rt) = &q.resource_type {
            args.push(rt.as_str().into());
            cond.push(format!("type = ?{}", args.len()));
        }
        if let Some(id) = &q.id {
            args.push(id.as_str().into());
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
        let limit = i64::try_from(q.count).unwrap_or(i64::MAX);
        let offset = i64::try_from(q.offset).unwrap_or(i64::MAX);
        // The count and the page in one statement, so both see the same rows.
        let rows = self
            .c
            .query(
                &format!(
                    "SELECT {COLS}, COUNT(*) OVER () FROM versions WHERE {wh} ORDER BY seq DESC LIMIT {limit} OFFSET {offset}"
                ),
                &args,
            )
            .map_err(se)?;
        let total = match rows.first() {
            Some(r) => r.int(13).map_err(se)?,
            // Past the end: count separately.
            None if offset > 0 => self
                .c
                .one(&format!("SELECT COUNT(*) FROM versions WHERE {wh}"), &args)
                .map_err(se)?
                .map_or(Ok(0), |r| r.int(0))
                .map_err(se)?,
            None => 0,
        };
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
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
        let ids = match system {
            None => self.ids(
                "SELECT DISTINCT id FROM identifier_index WHERE type = ?1 AND value = ?2",
                &vals![rt.as_str(), value],
            )?,
            Some(sys) => self.ids(
                "SELECT DISTINCT id FROM identifier_index WHERE type = ?1 AND value = ?2 AND system = ?3",
                &vals![rt.as_str(), value, sys],
            )?,
        };
        ids.iter().map(|id| ResourceId::parse(id).map_err(bad)).collect()
    }

    fn latest_timestamp(&mut self) -> Result<Option<Timestamp>, StoreError> {
        let r = self.c.one("SELECT MAX(last_updated) FROM versions", &[]).map_err(se)?;
        Ok(r.map(|r| r.opt_int(0)).transpose().map_err(se)?.flatten().map(Timestamp))
    }

    fn put(&mut self, v: &VersionRecord, index: &IndexEntries) -> Result<(), StoreError> {
        let pending = match &v.status {
            EntryStatus::Final => None,
            EntryStatus::Pending { author } => Some(author.as_str()),
        };
        let version = i64::try_from(v.version).map_err(bad)?;
        let (t, i) = (v.resource_type.as_str(), v.id.as_str());
        // The version, the current-version pointer and the index rows leave together (one flight
        // on PostgreSQL).
        let mut stmts: Vec<(&str, Vec<Value<'_>>)> = vec![
            (
                "INSERT INTO versions (type, id, version, last_updated, method, body, sha256, entered_by, pending_author, server_written, patient, classes, lab)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                Vec::from(vals![
                    t,
                    i,
                    version,
                    v.last_updated.0,
                    v.method.as_str(),
                    v.body.as_deref(),
                    &v.content_sha256[..],
                    v.entered_by.as_str(),
                    pending,
                    v.server_written,
                    v.patient.as_deref(),
                    v.classes.join(" "),
                    v.lab,
                ]),
            ),
            (
                "INSERT INTO resources (type, id, seq) SELECT type, id, seq FROM versions WHERE type = ?1 AND id = ?2 AND version = ?3
                 ON CONFLICT (type, id) DO UPDATE SET seq = excluded.seq",
                Vec::from(vals![t, i, version]),
            ),
        ];
        let mut index_rows = Vec::new();
        // A first version has no earlier entries to replace (a purge removes them all).
        self.index_statements(&v.resource_type, &v.id, v.is_deleted(), v.version == 1, index, &mut index_rows);
        stmts.extend(index_rows);
        self.c.execute_many(&stmts).map_err(se)
    }

    fn in_care(&mut self, patient: &str, member: &str) -> Result<bool, StoreError> {
        self.exists(
            "SELECT EXISTS (SELECT 1 FROM care_index WHERE patient = ?1 AND member = ?2)",
            &vals![patient, member],
        )
    }

    fn break_glass_active(&mut self, username: &str, patient: &str, now: Timestamp) -> Result<bool, StoreError> {
        self.exists(
            "SELECT EXISTS (SELECT 1 FROM break_glass WHERE username = ?1 AND patient = ?2 AND expires > ?3 AND granted <= ?3)",
            &vals![username, patient, now.0],
        )
    }

    fn add_break_glass(&mut self, g: &BreakGlassGrant) -> Result<(), StoreError> {
        self.c
            .execute(
                "INSERT INTO break_glass (id, username, patient, reason, granted, expires) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                &vals![&g.id, &g.username, &g.patient, &g.reason, g.granted.0, g.expires.0],
            )
            .map_err(se)?;
        Ok(())
    }

    fn break_glass_grants(&mut self, open_only: bool) -> Result<Vec<BreakGlassGrant>, StoreError> {
        let sql = format!(
            "SELECT id, username, patient, reason, granted, expires, reviewed_at, reviewed_by, review_note FROM break_glass {} ORDER BY granted DESC",
            if open_only { "WHERE reviewed_at IS NULL" } else { "" }
        );
        let rows = self.c.query(&sql, &[]).map_err(se)?;
        rows.iter()
            .map(|r| -> Result<BreakGlassGrant, Error> {
                let reviewed = r.opt_int(6)?;
                let by = r.opt_text(7)?;
                let note = r.opt_text(8)?;
                Ok(BreakGlassGrant {
                    id: r.text(0)?,
                    username: r.text(1)?,
                    patient: r.text(2)?,
                    reason: r.text(3)?,
                    granted: Timestamp(r.int(4)?),
                    expires: Timestamp(r.int(5)?),
                    review: reviewed.map(|t| (Timestamp(t), by.unwrap_or_default(), note.unwrap_or_default())),
                })
            })
            .collect::<Result<_, _>>()
            .map_err(se)
    }

    fn close_break_glass(&mut self, id: &str, by: &str, note: &str, at: Timestamp) -> Result<bool, StoreError> {
        let n = self
            .c
            .execute(
                "UPDATE break_glass SET reviewed_at = ?2, reviewed_by = ?3, review_note = ?4 WHERE id = ?1 AND reviewed_at IS NULL",
                &vals![id, at.0, by, note],
            )
            .map_err(se)?;
        Ok(n == 1)
    }

    fn for_each_version(&mut self, f: &mut dyn FnMut(&VersionRecord) -> bool) -> Result<(), StoreError> {
        self.visit(&format!("SELECT {COLS}, seq FROM versions WHERE seq > ?1 ORDER BY seq LIMIT 1000"), f)
    }

    fn purge(&mut self, rt: &ResourceType, id: &ResourceId) -> Result<u64, StoreError> {
        let (t, i) = (rt.as_str(), id.as_str());
        let d = self.c.dialect();
        // The delete trigger lets versions go only inside a purge.
        self.c.batch(d.purge_guard(true)).map_err(se)?;
        let n = self.c.execute("DELETE FROM versions WHERE type = ?1 AND id = ?2", &vals![t, i]).map_err(se)?;
        self.c.batch(d.purge_guard(false)).map_err(se)?;
        self.c.execute("DELETE FROM resources WHERE type = ?1 AND id = ?2", &vals![t, i]).map_err(se)?;
        let clear: Vec<(&str, Vec<Value<'_>>)> = CLEAR.iter().map(|sql| (*sql, Vec::from(vals![t, i]))).collect();
        self.c.execute_many(&clear).map_err(se)?;
        Ok(n)
    }

    fn search(&mut self, q: &SearchQuery, limit: usize) -> Result<Vec<Hit>, StoreError> {
        let rows = match self.merged(q, limit)? {
            Merged::Page(rows) => rows,
            Merged::Instead(how) => self.walk_or_gather(q, limit, how)?,
            Merged::Not => {
                let how = self.how(q, limit)?;
                self.walk_or_gather(q, limit, how)?
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut keys = Vec::with_capacity(q.sort.len());
            for i in 0..q.sort.len() {
                let present = r.int(1 + 2 * i).map_err(se)? != 0;
                keys.push((present, sort_val(r.value(2 + 2 * i).map_err(se)?)));
            }
            out.push(Hit { id: r.text(0).map_err(se)?, keys });
        }
        Ok(out)
    }

    fn search_count(&mut self, q: &SearchQuery) -> Result<u64, StoreError> {
        // Gathered (no page to walk for), but a dense `_lastUpdated` range read in type order.
        let how = self.how(q, usize::MAX)?;
        let rows = self.search_rows(&search_sql::count(q, how))?;
        let n = rows.first().map_or(Ok(0), |r| r.int(0)).map_err(se)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn references_from(
        &mut self,
        rt: &ResourceType,
        id: &ResourceId,
        param: Option<&str>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .c
            .query(
                "SELECT DISTINCT target_type, target_id FROM sp_ref WHERE type = ?1 AND id = ?2
                 AND (CAST(?3 AS TEXT) IS NULL OR param = ?3) AND target_id <> ''",
                &vals![rt.as_str(), id.as_str(), param],
            )
            .map_err(se)?;
        rows.iter().map(|r| Ok((r.text(0)?, r.text(1)?))).collect::<Result<_, Error>>().map_err(se)
    }

    fn references_from_many(
        &mut self,
        rt: &ResourceType,
        ids: &[ResourceId],
        param: &str,
    ) -> Result<Vec<Vec<(String, String)>>, StoreError> {
        let Some(last) = ids.last() else { return Ok(Vec::new()) };
        if ids.len() == 1 {
            return Ok(vec![self.references_from(rt, last, Some(param))?]);
        }
        let (args, list) = id_list(vec![rt.as_str().into(), param.into()], ids);
        let rows = self
            .c
            .query(
                &format!(
                    "SELECT id, target_type, target_id FROM sp_ref WHERE type = ?1 AND param = ?2 AND id IN ({list})
                     AND target_id <> ''"
                ),
                &args,
            )
            .map_err(se)?;
        let mut found: std::collections::HashMap<String, Vec<(String, String)>> = std::collections::HashMap::new();
        for r in rows {
            let refs = found.entry(r.text(0).map_err(se)?).or_default();
            let target = (r.text(1).map_err(se)?, r.text(2).map_err(se)?);
            // Distinct, as `references_from` (a reference written twice, or with two urls).
            if !refs.contains(&target) {
                refs.push(target);
            }
        }
        Ok(ids.iter().map(|id| found.get(id.as_str()).cloned().unwrap_or_default()).collect())
    }

    fn references_to(
        &mut self,
        source: &str,
        param: Option<&str>,
        target_type: &str,
        target_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        self.ids(
            "SELECT DISTINCT id FROM sp_ref WHERE type = ?1 AND (CAST(?2 AS TEXT) IS NULL OR param = ?2)
             AND target_id = ?4 AND target_type = ?3",
            &vals![source, param, target_type, target_id],
        )
    }

    fn replace_index(&mut self, rt: &ResourceType, id: &ResourceId, index: &IndexEntries) -> Result<(), StoreError> {
        let mut out = Vec::new();
        self.index_statements(rt, id, false, false, index, &mut out);
        self.c.execute_many(&out).map_err(se)
    }

    fn for_each_current(&mut self, f: &mut dyn FnMut(&VersionRecord) -> bool) -> Result<(), StoreError> {
        self.visit(
            &format!(
                // Driven by the versions' own key (a range of `seq`), each row's resource found
                // by its key: linear over the store. Paging `resources` by `seq`, which it has no
                // index on, read the whole table for every page (a 1M-resource restore's index
                // rebuild took hours).
                "SELECT {V_COLS}, v.seq FROM versions v JOIN resources r ON r.type = v.type AND r.id = v.id AND r.seq = v.seq
                 WHERE v.method <> 'delete' AND v.seq > ?1 ORDER BY v.seq LIMIT 1000"
            ),
            f,
        )
    }

    fn index_version(&mut self) -> Result<Option<String>, StoreError> {
        let r = self.c.one("SELECT value FROM store_flags WHERE name = 'index_version'", &[]).map_err(se)?;
        r.map(|r| r.text(0)).transpose().map_err(se)
    }

    fn set_index_version(&mut self, v: &str) -> Result<(), StoreError> {
        self.c
            .execute(
                "INSERT INTO store_flags (name, value) VALUES ('index_version', ?1) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                &vals![v],
            )
            .map_err(se)?;
        Ok(())
    }

    fn append_audit(&mut self, mut record: mamori_audit::AuditRecord) -> Result<u64, StoreError> {
        crate::stamp_with(self.stamp, &mut record);
        crate::audit::insert(self.c, self.now, record).map_err(se)
    }
}

impl<D: Db> Store for SqlStore<D> {
    fn write(&self, f: &mut (dyn FnMut(&mut dyn Tx) -> Result<(), RecordError> + Send)) -> Result<(), RecordError> {
        let clock = self.clock.clone();
        let (stamp, densities) = (&*self.stamp, &*self.densities);
        self.db.write_records(&mut |c| f(&mut RecordTx { c, now: clock.now().0, stamp, densities }))
    }

    fn read(&self, f: &mut dyn FnMut(&mut dyn Tx) -> Result<(), RecordError>) -> Result<(), RecordError> {
        let now = self.clock.now().0;
        let (stamp, densities) = (&*self.stamp, &*self.densities);
        self.db.read(|c| f(&mut RecordTx { c, now, stamp, densities }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_index_table_is_cleared() {
        for (table, sql) in super::INDEX_TABLES.iter().zip(super::CLEAR) {
            assert_eq!(sql, format!("DELETE FROM {table} WHERE type = ?1 AND id = ?2"));
        }
    }

    /// A probe's answer is taken again while it is recent, by the probe's text and arguments
    /// both; an old one is not; the kept answers stay bounded.
    #[test]
    fn density_answers_are_kept_briefly_and_boundedly() {
        use mamori_records::search::sql::{Arg, Sql};
        let d = super::Densities::default();
        let probe = |v: &str| Sql {
            text: "SELECT 0, (SELECT COUNT(*) FROM t WHERE v = ?1)".into(),
            args: vec![Arg::Text(v.into())],
        };
        let (a, b) = (super::Densities::key(&probe("a")), super::Densities::key(&probe("b")));
        assert_ne!(a, b, "the arguments are part of the key");
        assert_eq!(d.get(&a), None);
        d.put(a.clone(), (0, 5000));
        assert_eq!(d.get(&a), Some((0, 5000)));
        assert_eq!(d.get(&b), None);
        // Older than it is kept for: asked again.
        if let (Ok(mut kept), Some(old)) =
            (d.0.lock(), std::time::Instant::now().checked_sub(super::DENSITY_KEPT + std::time::Duration::from_secs(1)))
        {
            kept.insert(b.clone(), ((3, 7), old));
        }
        assert_eq!(d.get(&b), None);
        for i in 0..3 * super::DENSITIES_KEPT {
            d.put(super::Densities::key(&probe(&i.to_string())), (0, 1));
        }
        assert!(d.0.lock().map(|k| k.len()).unwrap_or(usize::MAX) <= super::DENSITIES_KEPT);
    }

    #[test]
    fn clipping_applies_where_the_dialect_limits_keys() {
        assert_eq!(crate::Dialect::Sqlite.index_bytes(), None);
        assert_eq!(crate::Dialect::Postgres.index_bytes(), Some(600));
    }
}
