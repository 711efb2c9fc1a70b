//! Criteria → one SQL statement over the index tables (`docs/SEARCH.md`). Placeholders are
//! numbered (`?1`, `?2`… for SQLite; the PostgreSQL store writes them `$1`, `$2`…).
//!
//! Tables (`type`, `id`, `param` lead every one):
//! `sp_string(norm, exact)`, `sp_token(system, code, text)`, `sp_date(lo, hi)`,
//! `sp_number(lo, hi, system, code)`, `sp_ref(target_type, target_id, url)`,
//! `sp_composite(system, code, s_system, s_code, lo, hi)`.

use super::extract::Stored;
use super::{Criterion, Cursor, Pred, Prefix, SearchQuery, SortKey, SortVal, StrMode, Table};

/// A bound argument.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// Integer.
    Int(i64),
    /// Real.
    Real(f64),
    /// Text.
    Text(String),
}

/// A statement and its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Sql {
    /// SQL text with numbered `?N` placeholders.
    pub text: String,
    /// Arguments in order.
    pub args: Vec<Arg>,
}

/// The highest code point: `x >= v AND x < v || MAX` is "starts with v" on an index.
const MAX_CHAR: char = '\u{10FFFF}';

/// How a store finds a substring (`:contains`, a token's `:text`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Substrings {
    /// `LIKE '%v%'` on the value column, which the store's trigram index serves (PostgreSQL's
    /// `pg_trgm` GIN indexes) or, without one, a scan of the parameter's rows.
    Like,
    /// SQLite's FTS5 trigram index `sp_text_fts` over `sp_text` (values of three or more
    /// characters, kept by triggers) for needles of three or more characters; shorter needles
    /// scan with `LIKE`.
    Fts5,
}

/// The shortest needle a trigram index serves.
const TRIGRAM: usize = 3;

/// How a store runs a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct How {
    /// How it finds substrings.
    pub subs: Substrings,
    /// The walkable criterion that would drive the query is dense ([`walk_density`]):
    /// walk the first [`WALK_CANDIDATES`] resources after the cursor in id order, checking each
    /// one, instead of gathering every match to sort it. A walk that returns less than a page
    /// may have stopped at its bound: the store then gathers.
    pub walk: bool,
    /// The driving `_lastUpdated` range holds [`DENSE_ROWS`] versions or more ([`time_density`]):
    /// gathered, the type's resources are read in order with their current versions' times
    /// checked (reading at most the type), not the range's versions through the time index
    /// (reading the whole range, every type's — 1M versions for `Patient?_lastUpdated=ge2020`).
    pub dense_time: bool,
    /// How the store's planner is told which resources a walk reads.
    pub bound: WalkBound,
}

/// How a walk's statement bounds its candidates (each store's planner reads one form well).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkBound {
    /// `r.id <= (SELECT MAX(id) FROM (the next WALK_CANDIDATES ids))`: SQLite reads that range
    /// of `resources` in id order and stops after a page.
    Range,
    /// The next [`WALK_CANDIDATES`] ids as the subquery the candidates come from. PostgreSQL
    /// cannot know the range's end when it plans (a subquery's value), so it expected a third
    /// of the type and, for a chain, hashed every reference row of the parameter rather than
    /// check a thousand candidates by key: `Observation?subject:Patient.name=山田&code=8310-5` at
    /// 100k resources 23–27 ms for the statement, ~2 ms from the subquery.
    Subquery,
}

impl How {
    /// Gathering the matches of every criterion that drives.
    pub fn new(subs: Substrings) -> How {
        How { subs, walk: false, dense_time: false, bound: WalkBound::Range }
    }
}

/// How many resources a walk checks at most (about 4 µs each on SQLite): a walk that finds a
/// page among them is exact (they are the first candidates in the page's order), one that does
/// not costs at most this many checks before the store gathers instead.
pub const WALK_CANDIDATES: i64 = 1000;

/// The largest page a walk is tried for: a walk of [`WALK_CANDIDATES`] fills it only when a
/// tenth of the resources match.
pub const WALK_PAGE: usize = 100;

/// How many of the values holding a needle a density probe reads from SQLite's dictionary
/// (`sp_text`). A short needle can be held by thousands of distinct values (`shi`: 5,727 names
/// of 100k patients, 12 ms to list them); a needle held by this many is dense enough to try a
/// walk (which, bounded, costs little when it was not), and the rows of fewer tell how many
/// resources gathering would sort.
pub const PROBE_VALUES: i64 = 64;

/// How many dictionary values a merge by value ([`search_merged`]) reads at most: a needle held
/// by this many or more is walked. (SQLite allows 500 parts in a compound `SELECT`; the merge
/// pads the values to a power of two.) A needle held by more (the peer benchmark's three-letter
/// romanised pieces: 1,000–3,400 values, full names included) is merged in parts of this many
/// when its walk falls short.
pub const MERGE_VALUES: i64 = 256;

/// How many more candidates than a page a merge by value reads when other criteria are checked
/// on them: a page they leave short is gathered instead.
pub const MERGE_WIDEN: usize = 8;

/// From how many versions in a `_lastUpdated` range ([`time_density`]) walking is tried before
/// gathering: a walk that falls short costs at most [`WALK_CANDIDATES`] checks, about what
/// gathering this many versions through the time index costs (each read, its type and
/// currency checked, then sorted by id — 11–14 ms for a range of 4,000 versions at 2,000
/// resources, where the walk found its page among the first few dozen).
pub const TIME_WALK_ROWS: i64 = WALK_CANDIDATES;

/// From how many index rows on a substring criterion walking beats gathering: gathering costs
/// about 1.7 µs per row (23 ms for 13,800 patients of 100k), walking about the page size ÷ the
/// share of resources that match — under 5 ms for a page of 20 from 5,000 matches among 1M.
pub const DENSE_ROWS: i64 = 5000;

/// Whether a query's driving criterion is one that may be walked ([`walkable`]: a substring
/// match, a chain, a token, date, number or composite match) whose density decides the plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Density {
    /// It is not (or the query has an order of its own, or asks for more than [`WALK_PAGE`]):
    /// gather.
    NotWalkable,
    /// A needle is too short for a trigram: gathering reads every row of the parameter anyway,
    /// walking stops after a page — walk.
    Short,
    /// Run this: one row of how many dictionary values hold the needle (at most
    /// [`PROBE_VALUES`]; 0 where the store has no dictionary) and how many index rows match (at
    /// most [`DENSE_ROWS`]), and walk when either reaches its bound ([`dense`]).
    Probe(Sql),
}

/// Whether a probe's answer ([`Density::Probe`]) calls for a walk.
pub fn dense(values: i64, rows: i64) -> bool {
    values >= PROBE_VALUES || rows >= DENSE_ROWS
}

/// How a `_lastUpdated` range holding `versions` (the answer of [`time_density`], at most
/// [`DENSE_ROWS`]) is run for a page of `limit` of `q`: walked first from
/// [`TIME_WALK_ROWS`] versions on (when `q` may be walked, [`walk_order`]), and gathered by
/// reading the type in order ([`How::dense_time`]) from [`DENSE_ROWS`] on, else through the
/// time index.
pub fn time_how(q: &SearchQuery, limit: usize, base: How, versions: i64) -> How {
    How { walk: versions >= TIME_WALK_ROWS && walk_order(q, limit), dense_time: versions >= DENSE_ROWS, ..base }
}

/// The needles of a substring match: its values when every one is a `:contains` on a string or
/// a `:text` on a token.
fn needles(table: Table, any: &[Pred]) -> Option<Vec<&str>> {
    if any.is_empty() {
        return None;
    }
    any.iter()
        .map(|p| match (p, table) {
            (Pred::Str(StrMode::Contains, v), Table::Str) | (Pred::TokenText(v), Table::Token) => Some(v.as_str()),
            _ => None,
        })
        .collect()
}

/// The needles of a substring criterion (not negated).
fn substring_needles(c: &Criterion) -> Option<Vec<&str>> {
    let Criterion::Match { table, any, negate: false, .. } = c else { return None };
    needles(*table, any)
}

/// Whether `c`'s density is its count of index rows (no dictionary to probe): a chain
/// (`subject:Patient.name=…`, a reference to any resource matching an inner criterion), or a
/// token, date, number or composite match. Such a criterion on a common value holds a large
/// share of its type — `Observation?code=8310-5` a quarter of a million Observations at 1M
/// resources, a chain over a common name a tenth (~450 ms to gather and sort them for one page)
/// — spread over the id order like a common substring's. A plain reference or a string prefix or
/// `:exact` is not: those are narrow, ordered by value or merged by value.
fn counted(c: &Criterion) -> bool {
    match c {
        Criterion::Match { table: Table::Ref, any, negate: false, .. } => {
            !any.is_empty() && any.iter().all(|p| matches!(p, Pred::Chain(_)))
        }
        Criterion::Match {
            table: Table::Token | Table::Date | Table::Number | Table::Composite,
            any,
            negate: false,
            ..
        } => !any.is_empty() && substring_needles(c).is_none(),
        Criterion::LastUpdated(any) => !any.is_empty(),
        // A `_has` whose criterion on the referring type is a plain match: counted by that
        // criterion's rows (the referrers' references are not: a rare criterion would read
        // every reference of the parameter to count them).
        Criterion::Has { inner, .. } => has_counted(inner).is_some(),
        _ => false,
    }
}

/// The plain match of a `_has`'s criterion (no negation, no chain, no substring), whose rows a
/// density probe counts.
fn has_counted(inner: &Criterion) -> Option<(&str, Table, &[Pred])> {
    match inner {
        Criterion::Match { param, table, any, negate: false }
            if !any.is_empty()
                && !any.iter().any(|p| matches!(p, Pred::Chain(_)))
                && substring_needles(inner).is_none() =>
        {
            Some((param.as_str(), *table, any.as_slice()))
        }
        _ => None,
    }
}

/// Whether a dense `c` may be walked instead of gathered (checked per candidate in id order):
/// a substring match, or one whose rows are counted ([`counted`]).
fn walkable(c: &Criterion) -> bool {
    substring_needles(c).is_some() || counted(c)
}

/// How dense the walkable criterion ([`walkable`]) that would drive `q` (every criterion
/// gathered) is, or how to find out: a [`counted`] one by its rows, up to [`DENSE_ROWS`].
///
/// A walk visits resources in id order, so only a search in that order (no `_sort`) for a page
/// of at most [`WALK_PAGE`] is considered.
pub fn walk_density(q: &SearchQuery, subs: Substrings, limit: usize) -> Density {
    if !walk_order(q, limit) {
        return Density::NotWalkable;
    }
    let ty = q.resource_type.as_str();
    let mut b = B::new(How::new(subs));
    let limit = b.i(DENSE_ROWS);
    // A `_has` is dense when its criterion on the referring type is: then most candidates are
    // referred to by a match (`Patient?_has:Observation:subject:code=8310-5`: a quarter of the
    // Observations, nearly every patient), and a walk of the candidates, each checked by key,
    // stops after a page where listing the referrers read every match (75 ms at 200k
    // resources). A criterion dense on few candidates walks short and is gathered after all.
    if let Some(Criterion::Has { source, inner, .. }) = gathered_driver(q) {
        let Some((param, table, any)) = has_counted(inner) else { return Density::NotWalkable };
        let from = b.match_from(source, param, table, any, Role::Probe);
        let text = format!("SELECT 0, (SELECT COUNT(*) FROM (SELECT 1 {from} LIMIT {limit}) d)");
        return Density::Probe(Sql { text, args: b.args });
    }
    let Some(c @ Criterion::Match { param, table, any, .. }) = gathered_driver(q) else { return Density::NotWalkable };
    // A counted criterion has no dictionary: the probe below counts its rows (for a chain, its
    // references) alone.
    if !counted(c) {
        let Some(needles) = substring_needles(c) else { return Density::NotWalkable };
        if needles.iter().any(|n| n.chars().count() < TRIGRAM) {
            return Density::Short;
        }
    }
    let from = match chain_probe_from(&mut b, ty, param, any) {
        Some(from) => from,
        None => b.match_from(ty, param, *table, any, Role::Probe),
    };
    let rows = format!("(SELECT COUNT(*) FROM (SELECT 1 {from} LIMIT {limit}) d)");
    let text = match b.trigram_needles(*table, any) {
        // The rows are counted only when the values are few (`CASE` evaluates lazily).
        Some(needles) => {
            let v = b.text_values(ty, param, &needles, Some(PROBE_VALUES));
            format!(
                "SELECT n, CASE WHEN n < {} THEN {rows} ELSE 0 END FROM (SELECT COUNT(*) AS n FROM ({v}) v) p",
                b.i(PROBE_VALUES)
            )
        }
        None => format!("SELECT 0, {rows}"),
    };
    Density::Probe(Sql { text, args: b.args })
}

/// The references of a chain with one target type whose criterion is a plain match (no
/// negation, no substring through the trigram index), read from the targets' matching rows on
/// (`FROM … t CROSS JOIN sp_ref x …`): each target's references are sought as its row comes, so
/// a probe's `LIMIT` stops the reading. As `target_id IN (…)`, SQLite first listed every
/// matching target into a temporary index (2 ms of a ~6 ms page of `subject:Patient.name=山田`
/// at 1M resources, 2,439 patients). A target whose criterion matches several of its rows (a
/// family name and a full name) has its references counted for each: the count tells density,
/// and overcounting only makes a walk likelier (which is bounded).
fn chain_probe_from(b: &mut B, ty: &str, param: &str, any: &[Pred]) -> Option<String> {
    let [Pred::Chain(targets)] = any else { return None };
    let [(target, Criterion::Match { param: inner, table, any: inner_any, negate: false })] = targets.as_slice() else {
        return None;
    };
    if b.trigram_needles(*table, inner_any).is_some() {
        return None;
    }
    let rows = b.match_from_as(target, inner, *table, inner_any, Role::List, "y");
    let t = b.t(ty);
    let p = b.param(ty, param, "x.");
    let tt = b.t(target);
    let index = if b.how.subs == Substrings::Fts5 {
        format!(" INDEXED BY {}", Table::Ref.value_index())
    } else {
        String::new()
    };
    Some(format!(
        "FROM (SELECT y.id AS id {rows}) t CROSS JOIN sp_ref x{index} \
         WHERE x.type = {t} AND {p} AND x.target_type = {tt} AND x.target_id = t.id"
    ))
}

/// Whether a page of `limit` of `q` could be walked: results in id order (no `_sort`), a page of
/// at most [`WALK_PAGE`].
pub fn walk_order(q: &SearchQuery, limit: usize) -> bool {
    q.sort.is_empty() && limit <= WALK_PAGE
}

/// When a `_lastUpdated` criterion would drive `q` (every criterion gathered), the probe of its
/// density, whatever the order or page (it also decides how the range is gathered,
/// [`How::dense_time`]): one row, `0` and how many versions the range holds, at most
/// [`DENSE_ROWS`] — every type's and the past ones too (the time index has no type). A range
/// dense among them but sparse in the type costs a walk that falls short (at most
/// [`WALK_CANDIDATES`] checks) and a read of the type in order.
pub fn time_density(q: &SearchQuery, subs: Substrings) -> Option<Sql> {
    let Some(Criterion::LastUpdated(any)) = gathered_driver(q) else { return None };
    let mut b = B::new(How::new(subs));
    let (index, cond) = b.time_range(any, "last_updated");
    let limit = b.i(DENSE_ROWS);
    let text = format!("SELECT 0, (SELECT COUNT(*) FROM (SELECT 1 FROM versions{index} WHERE {cond} LIMIT {limit}) d)");
    Some(Sql { text, args: b.args })
}

/// The criterion that drives `q` when every criterion is gathered (the most selective).
fn gathered_driver(q: &SearchQuery) -> Option<&Criterion> {
    q.criteria.iter().min_by_key(|c| selectivity(c, false))
}

/// The statement listing the dictionary values (at most [`MERGE_VALUES`]) of the string
/// substring criterion that would drive `q`, when `q` could be merged by value instead
/// ([`search_merged`]): SQLite's dictionary, results in id order (no `_sort`), a page of at most
/// [`WALK_PAGE`], a `:contains` on a string parameter with needles of three or more characters.
/// One row per value, the value in column 0.
pub fn merge_values(q: &SearchQuery, subs: Substrings, limit: usize) -> Option<Sql> {
    merge_listing(q, subs, limit, Some(MERGE_VALUES))
}

/// [`merge_values`] listing every value holding the needle (for a merge in parts,
/// [`MERGE_VALUES`] values each, after a walk fell short).
pub fn merge_values_all(q: &SearchQuery, subs: Substrings, limit: usize) -> Option<Sql> {
    merge_listing(q, subs, limit, None)
}

fn merge_listing(q: &SearchQuery, subs: Substrings, limit: usize, values: Option<i64>) -> Option<Sql> {
    if subs != Substrings::Fts5 || !q.sort.is_empty() || limit > WALK_PAGE {
        return None;
    }
    let Some(Criterion::Match { param, table: Table::Str, any, negate: false }) = gathered_driver(q) else {
        return None;
    };
    let mut b = B::new(How::new(subs));
    let needles = b.trigram_needles(Table::Str, any)?;
    let text = b.text_values(q.resource_type.as_str(), param, &needles, values);
    Some(Sql { text, args: b.args })
}

/// One index range a merge by value reads ([`merged_from`]): the rows of one normalised value
/// of the driving string parameter (a dictionary value holding a substring), or only those of
/// them that hold one value as written (a `:exact` value, [`exact_arms`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arm {
    /// The normalised value (`sp_string.norm`).
    pub norm: String,
    /// The value as written (`sp_string.exact`), when only rows holding it count.
    pub exact: Option<String>,
}

impl Arm {
    /// Every row of a normalised value.
    pub fn value(norm: String) -> Arm {
        Arm { norm, exact: None }
    }
}

/// The ranges a `:exact` criterion that would drive `q` is merged by ([`search_merged`]): per
/// value, the rows of its normalised form that hold it as written. A stored value equal to `v`
/// has `v`'s normalised form as its `norm`, whole where the store keeps keys whole (SQLite; not
/// PostgreSQL, which clips them), and the value index keeps one form's rows in id order, so the
/// page is the first ids of a merge instead of every match gathered and sorted (2,439 patients
/// for `family:exact=山田` at 1M resources: ~1 ms of the statement where the merge reads a page,
/// and a p99 above 20 ms at 8 connections). `None` when `q` is not in id order, asks for more
/// than [`WALK_PAGE`], or is not driven by a `:exact` on a string parameter.
pub fn exact_arms(q: &SearchQuery, subs: Substrings, limit: usize) -> Option<Vec<Arm>> {
    if subs != Substrings::Fts5 || !q.sort.is_empty() || limit > WALK_PAGE {
        return None;
    }
    let Some(Criterion::Match { table: Table::Str, any, negate: false, .. }) = gathered_driver(q) else {
        return None;
    };
    if any.is_empty() || usize::try_from(MERGE_VALUES).is_ok_and(|m| any.len() >= m) {
        return None;
    }
    any.iter()
        .map(|p| match p {
            Pred::Str(StrMode::Exact, v) => Some(Arm { norm: super::normalize::string(v), exact: Some(v.clone()) }),
            _ => None,
        })
        .collect()
}

/// [`search`] for a page in id order driven by a string criterion whose rows are a few ranges
/// of the value index (`arms`, all of them: fewer than [`MERGE_VALUES`]) — a substring held by
/// few dictionary values, or `:exact` values ([`exact_arms`]): each range's rows are already in
/// id order (`sp_string_value` is keyed by type, parameter, value and then the resource key), so
/// the page is the first `limit` ids after the cursor of a merge of the ranges
/// ([`merged_from`]) — one seek per range and about a page of rows, however the matches are
/// spread over the ids and however many there are. Other criteria are checked per candidate;
/// when they (or the caller's guard) leave the page short, the caller gathers instead.
pub fn search_merged(q: &SearchQuery, limit: usize, how: How, arms: &[Arm]) -> Sql {
    let mut b = B::new(how);
    b.merge = Some((arms.to_vec(), limit));
    let (wh, from, rows) = where_clause(&mut b, q);
    debug_assert_eq!(rows, Rows::Resources, "a merge is driven by its merged criterion");
    let mut text = format!("SELECT * FROM (SELECT r.id AS id FROM {from} WHERE {wh}) m");
    let backwards = q.cursor.as_ref().is_some_and(|c| c.backwards);
    if let Some(c) = &q.cursor {
        text += &format!(" WHERE {}", keyset(&mut b, q, c));
    }
    let dir = if backwards { "DESC" } else { "ASC" };
    text += &format!(" ORDER BY id {dir} LIMIT {}", b.i(i64::try_from(limit).unwrap_or(i64::MAX)));
    Sql { text, args: b.args }
}

/// A search in id order from its cursor: the cursor's id and the comparison that keeps what
/// comes after it (`None` on the first page), and the direction the ids are read in.
fn id_order(q: &SearchQuery) -> (Option<(&str, &'static str)>, &'static str) {
    match &q.cursor {
        Some(c) if c.backwards => (Some((c.id.as_str(), "<")), "DESC"),
        Some(c) => (Some((c.id.as_str(), ">")), "ASC"),
        None => (None, "ASC"),
    }
}

/// The driving rows of a merged substring criterion: the first `limit` resources after the
/// cursor, in id order, of any of its dictionary values (`limit` times [`MERGE_WIDEN`] when
/// other criteria are checked on them).
///
/// One compound `SELECT` of one index range per value (`UNION`, which also drops a resource
/// held by two values) with its own `ORDER BY id LIMIT`: SQLite runs that as a merge of the
/// ranges, each read lazily in id order, and stops after the limit — one seek per value and
/// about `limit` rows in all, however many resources each value holds. (A `LIMIT` per range,
/// then `DISTINCT` and a sort, read `limit` rows of every value and sorted them: 1.2 ms for 64
/// values where the merge takes 0.3 ms, and 6 ms for 400.) The dictionary's values are padded to
/// a power of two (at least eight) by repeating the last, so that the statements of a few
/// lengths are reused from the connection's statement cache instead of prepared anew (a few ms
/// for hundreds of ranges); `:exact` values, usually one, to a power of two.
fn merged_from(b: &mut B, q: &SearchQuery, param: &str) -> String {
    let ty = q.resource_type.as_str();
    let (after, dir) = id_order(q);
    let (mut arms, limit) = b.merge.take().unwrap_or_default();
    let Some(last) = arms.last().cloned() else {
        // No value holds the needle: nothing matches.
        return "(SELECT NULL AS type, NULL AS id WHERE 0) r".to_string();
    };
    let least = if last.exact.is_some() { 1 } else { 8 };
    arms.resize(arms.len().next_power_of_two().max(least), last);
    let mut parts = Vec::with_capacity(arms.len());
    for arm in &arms {
        let t = b.t(ty);
        let p = b.param(ty, param, "x.");
        let v = b.t(&arm.norm);
        let exact = arm.exact.as_ref().map(|e| format!(" AND x.exact = {}", b.t(e))).unwrap_or_default();
        let after = after.map(|(id, op)| format!(" AND x.id {op} {}", b.t(id))).unwrap_or_default();
        parts.push(format!(
            "SELECT x.id AS id FROM sp_string x INDEXED BY sp_string_value WHERE x.type = {t} AND {p} AND x.norm = {v}{exact}{after}"
        ));
    }
    let widen = if q.criteria.len() > 1 { MERGE_WIDEN } else { 1 };
    let l = b.i(i64::try_from(limit.saturating_mul(widen)).unwrap_or(i64::MAX).min(WALK_CANDIDATES));
    let t = b.t(ty);
    format!("(SELECT {t} AS type, id FROM ({} ORDER BY 1 {dir} LIMIT {l}) u) r", parts.join(" UNION "))
}

/// What a match's rows are read for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Listing every resource that matches (the query's driver, an `IN` list).
    List,
    /// Counting the rows of a substring match, up to [`DENSE_ROWS`] (a density probe).
    Probe,
    /// Testing one candidate (`x.id` is compared by the caller).
    Check,
}

struct B {
    args: Vec<Arg>,
    how: How,
    /// The ranges a merged driver reads and the page size ([`search_merged`]).
    merge: Option<(Vec<Arm>, usize)>,
    /// The alias of the index rows whose predicates are being written ([`B::match_from_as`]):
    /// a chain's target is matched against that row's `target_id`.
    rows: &'static str,
}

impl B {
    fn new(how: How) -> B {
        B { args: Vec::new(), how, merge: None, rows: "x" }
    }
    fn push(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("?{}", self.args.len())
    }
    fn t(&mut self, s: &str) -> String {
        self.push(Arg::Text(s.to_string()))
    }
    fn i(&mut self, v: i64) -> String {
        self.push(Arg::Int(v))
    }
    fn r(&mut self, v: f64) -> String {
        self.push(Arg::Real(v))
    }

    /// `FROM table x WHERE x.type = ? AND x.param = ? AND (preds)` of a `Match`, in its `role`.
    /// Only a listing goes through the trigram dictionary: a check reads the candidate's own rows
    /// by its key and tests each with `LIKE` — a few rows per candidate, where going through the
    /// dictionary first listed every value holding the needle (12 ms for `name:contains=shi` at
    /// 100k patients, to check a page of ten).
    fn match_from(&mut self, ty: &str, param: &str, table: Table, any: &[Pred], role: Role) -> String {
        self.match_from_as(ty, param, table, any, role, "x")
    }

    /// [`Self::match_from`] with the table under `alias`: a chain's target matched inside a
    /// statement on its referring rows, which are `x` ([`chain_probe_from`], and a chain checked
    /// per walked candidate in [`Self::pred`]). Not for a substring match through the trigram
    /// index (its statement names `x`).
    fn match_from_as(
        &mut self,
        ty: &str,
        param: &str,
        table: Table,
        any: &[Pred],
        role: Role,
        alias: &'static str,
    ) -> String {
        if role != Role::Check
            && let Some(needles) = self.trigram_needles(table, any)
        {
            let values = (role == Role::Probe).then_some(PROBE_VALUES);
            return self.match_from_text(ty, param, table, &needles, values);
        }
        let (rows, cond) = self.rows_matching(ty, param, table, any, role, alias);
        format!("FROM {rows} WHERE {cond}")
    }

    /// [`B::match_from_as`] in its two parts, for a match read from its own rows: the table (and
    /// the index it is read by) as `alias`, and the condition on its rows.
    fn rows_matching(
        &mut self,
        ty: &str,
        param: &str,
        table: Table,
        any: &[Pred],
        role: Role,
        alias: &'static str,
    ) -> (String, String) {
        let t = self.t(ty);
        let p = self.param(ty, param, &format!("{alias}."));
        let outer = std::mem::replace(&mut self.rows, alias);
        let preds: Vec<String> = any.iter().map(|pr| self.pred(pr, table, role)).collect();
        self.rows = outer;
        // Listing or counting, SQLite is held to the value index: left to itself, it read every
        // row of the type by key (the rows come in id order, which spares the `DISTINCT` a sort)
        // — 0.7 s for `Observation?code=nope` at 1M resources, where the index finds nothing at
        // once. The value index leads with (type, param), so it never reads more than the key.
        let index = match (self.how.subs, role) {
            (Substrings::Fts5, Role::List | Role::Probe) if above(table, any) => {
                format!(" INDEXED BY {}", table.high_index())
            }
            (Substrings::Fts5, Role::List | Role::Probe) => format!(" INDEXED BY {}", table.value_index()),
            // Checked for one candidate, by its key: with the index on `hi` at hand, SQLite read
            // the range `hi > v` of the whole parameter for every candidate instead (3.5 s for a
            // walk of `value-quantity=gt50` at 1M resources, against 0.16 s before that index).
            // A chain's target checked for one referring row, by the target's key.
            (Substrings::Fts5, Role::Check) if matches!(table, Table::Date | Table::Number) || alias != "x" => {
                format!(" INDEXED BY {}", table.owner_index())
            }
            _ => String::new(),
        };
        (format!("{} {alias}{index}", table.name()), format!("{alias}.type = {t} AND {p} AND ({})", preds.join(" OR ")))
    }

    /// The needles of a substring match the store's trigram table serves: every value of the
    /// criterion a `:contains` (or a token's `:text`) of three or more characters.
    fn trigram_needles<'p>(&self, table: Table, any: &'p [Pred]) -> Option<Vec<&'p str>> {
        if self.how.subs != Substrings::Fts5 {
            return None;
        }
        needles(table, any).filter(|ns| ns.iter().all(|n| n.chars().count() >= TRIGRAM))
    }

    /// `FROM table x WHERE …` listing the rows of a substring match through SQLite's trigram
    /// index: the values of the parameter holding a needle come from the dictionary `sp_text`
    /// (each needle one FTS5 phrase — consecutive trigrams, which is exactly "contains" —
    /// rechecked with `LIKE`; the first `values` of them for a probe), then their rows from the
    /// value index. The dictionary is read in the trigram index's order and its type checked on
    /// the values found (`+` keeps the planner from walking every value of the type instead), so
    /// a limit stops the reading. The statement names the value index: left to itself, SQLite
    /// walked every row of the type in (type, id) order to save the `DISTINCT`'s sort.
    fn match_from_text(
        &mut self,
        ty: &str,
        param: &str,
        table: Table,
        needles: &[&str],
        values: Option<i64>,
    ) -> String {
        let t = self.t(ty);
        let p = self.param(ty, param, "x.");
        let values = self.text_values(ty, param, needles, values);
        // A token's text is found through the partial index `sp_token_text`, whose condition the
        // statement repeats so that the planner may use it.
        let (col, index, partial) = match table {
            Table::Token => ("x.text", "sp_token_text", " AND length(x.text) >= 3"),
            _ => ("x.norm", "sp_string_value", ""),
        };
        format!(
            "FROM {} x INDEXED BY {index} WHERE x.type = {t} AND {p} AND {col} IN ({values}){partial}",
            table.name()
        )
    }

    /// The dictionary values of `ty`'s `param` holding a needle (the first `limit` of them).
    fn text_values(&mut self, ty: &str, param: &str, needles: &[&str], limit: Option<i64>) -> String {
        let phrases: Vec<String> = needles.iter().map(|n| format!("\"{}\"", n.replace('"', "\"\""))).collect();
        let m = self.t(&phrases.join(" OR "));
        let tv = self.t(ty);
        let pv = self.param(ty, param, "tv.");
        let likes: Vec<String> =
            needles.iter().map(|n| format!("tv.norm LIKE {} ESCAPE '\\'", self.t(&like_contains(n)))).collect();
        let limit = limit.map(|v| format!(" LIMIT {}", self.i(v))).unwrap_or_default();
        format!(
            "SELECT tv.norm FROM sp_text_fts f JOIN sp_text tv ON tv.n = f.rowid WHERE sp_text_fts MATCH {m} \
             AND +tv.type = {tv} AND {pv} AND ({}){limit}",
            likes.join(" OR ")
        )
    }

    /// The condition selecting the rows of parameter `param` of `ty` (columns prefixed `a`),
    /// wherever they are kept (`extract::Stored`): `param = ?`, `param IN (?, ?)` for a union,
    /// `(param = ? AND target_type = ?)` for a narrowed reference.
    fn param(&mut self, ty: &str, param: &str, a: &str) -> String {
        match super::extract::param(ty, param).map(|p| &p.stored) {
            Some(Stored::Union(parts)) => {
                let ph: Vec<String> = parts.iter().map(|p| self.t(p)).collect();
                format!("{a}param IN ({})", ph.join(", "))
            }
            Some(Stored::Narrowed { param, target_type }) => {
                format!("({a}param = {} AND {a}target_type = {})", self.t(param), self.t(target_type))
            }
            Some(Stored::Own) | None => format!("{a}param = {}", self.t(param)),
        }
    }

    /// `_lastUpdated` predicates on the version time in `col`. A version's time is an instant —
    /// a range whose `lo` and `hi` are the same — so each prefix of [`Self::value_pred`]'s date
    /// comparisons is a plain range of `col` (`ge` a day: `lo >= L`, since `L <= H`), which an
    /// index on the time can seek; `ne` is the one that is not.
    fn last_updated(&mut self, any: &[Pred], col: &str) -> String {
        let preds: Vec<String> = any
            .iter()
            .map(|pr| match pr {
                Pred::Date { prefix, lo, hi, margin } => {
                    let (lo, hi) = (*lo, *hi);
                    match prefix {
                        Prefix::Eq => format!("({col} >= {} AND {col} <= {})", self.i(lo), self.i(hi)),
                        Prefix::Ne => format!("NOT ({col} >= {} AND {col} <= {})", self.i(lo), self.i(hi)),
                        Prefix::Gt | Prefix::Sa => format!("{col} > {}", self.i(hi)),
                        Prefix::Lt | Prefix::Eb => format!("{col} < {}", self.i(lo)),
                        Prefix::Ge => format!("{col} >= {}", self.i(lo)),
                        Prefix::Le => format!("{col} <= {}", self.i(hi)),
                        Prefix::Ap => format!(
                            "({col} >= {} AND {col} <= {})",
                            self.i(lo.saturating_sub(*margin)),
                            self.i(hi.saturating_add(*margin))
                        ),
                    }
                }
                // The parser gives `_lastUpdated` dates only.
                _ => "1 = 0".into(),
            })
            .collect();
        format!("({})", preds.join(" OR "))
    }

    /// The index hint and the condition reading the versions whose time (`col`) satisfies `any`
    /// (`_lastUpdated`) through the time index: SQLite, which keeps no statistics here, would
    /// rather read the type's versions (`type = ?`) than a range of times. (`ne` is not a range:
    /// no hint.)
    fn time_range(&mut self, any: &[Pred], col: &str) -> (&'static str, String) {
        let ranged = any.iter().all(|p| !matches!(p, Pred::Date { prefix: Prefix::Ne, .. }));
        let index = if self.how.subs == Substrings::Fts5 && ranged { " INDEXED BY versions_by_time" } else { "" };
        (index, self.last_updated(any, col))
    }

    /// The ids of `ty`'s resources whose current version's time satisfies `any` (`_lastUpdated`
    /// gathered): the versions in the time range, through the time index, each kept when it is
    /// its resource's current one. (It was every resource of the type joined to its current
    /// version and tested — 4.8 s for `_lastUpdated=ge…` at 1M resources, whatever the range.)
    fn last_updated_ids(&mut self, ty: &str, any: &[Pred]) -> String {
        let (index, cond) = self.time_range(any, "lv.last_updated");
        let t = self.t(ty);
        format!(
            "SELECT lv.id FROM versions lv{index} WHERE {cond} AND lv.type = {t} \
             AND lv.seq = (SELECT lr.seq FROM resources lr WHERE lr.type = lv.type AND lr.id = lv.id)"
        )
    }

    /// A boolean SQL condition: the id in column `col` (of a resource of type `ty`) satisfies `c`.
    fn cond(&mut self, c: &Criterion, ty: &str, col: &str) -> String {
        match c {
            // No ids (a join that found no visible record): nothing matches.
            Criterion::Id(ids) if ids.is_empty() => "1 = 0".into(),
            Criterion::Id(ids) => {
                let ph: Vec<String> = ids.iter().map(|i| self.t(i)).collect();
                format!("{col} IN ({})", ph.join(", "))
            }
            Criterion::LastUpdated(any) => format!("{col} IN ({})", self.last_updated_ids(ty, any)),
            Criterion::Match { param, table, any, negate } => {
                let from = self.match_from(ty, param, *table, any, Role::List);
                format!("{col} {}IN (SELECT x.id {from})", if *negate { "NOT " } else { "" })
            }
            Criterion::Missing { param, table, missing } => {
                let t = self.t(ty);
                let p = self.param(ty, param, "");
                format!(
                    "{col} {}IN (SELECT id FROM {} WHERE type = {t} AND {p})",
                    if *missing { "NOT " } else { "" },
                    table.name()
                )
            }
            Criterion::Has { source, param, inner } => {
                let s = self.t(source);
                let p = self.param(source, param, "h.");
                let tt = self.t(ty);
                let inner = self.cond(inner, source, "h.id");
                format!(
                    "{col} IN (SELECT h.target_id FROM sp_ref h WHERE h.type = {s} AND {p} AND h.target_type = {tt} AND {inner})"
                )
            }
        }
    }

    fn pred(&mut self, p: &Pred, table: Table, role: Role) -> String {
        match (p, table) {
            (Pred::Composite { system, code, second }, _) => {
                let mut s = format!("(code = {}", self.t(code));
                if let Some(sys) = system {
                    s += &format!(" AND system = {}", self.t(sys));
                }
                let second = self.value_pred(second, "s_system", "s_code", "s_code");
                format!("{s} AND {second})")
            }
            (Pred::Chain(targets), _) => {
                // Checking one candidate, its own rows (`x`, found by key) are tested against the
                // targets; as a bare column, SQLite seeks the value index once per target instead
                // (2,439 seeks per candidate for `subject:Patient.name=山田` at 1M resources).
                // Walking (at most `WALK_CANDIDATES` candidates), each reference's target is
                // matched on its own rows, by key (`y`): as `IN (…)`, every matching target was
                // listed into a temporary index for every statement (~1.3 ms of a page of
                // `山田`). Gathering, that set serves every candidate and stays.
                let col = if role == Role::Check { "(target_id || '')" } else { "target_id" };
                let parts: Vec<String> = targets
                    .iter()
                    .map(|(ty, c)| {
                        let t = self.t(ty);
                        let inner = match c {
                            Criterion::Match { param, table, any, negate } if role == Role::Check && self.how.walk => {
                                let from = self.match_from_as(ty, param, *table, any, Role::Check, "y");
                                let not = if *negate { "NOT " } else { "" };
                                format!("{not}EXISTS (SELECT 1 {from} AND y.id = {}.target_id)", self.rows)
                            }
                            c => self.cond(c, ty, col),
                        };
                        format!("(target_type = {t} AND {inner})")
                    })
                    .collect();
                format!("({})", parts.join(" OR "))
            }
            (Pred::Ref { ty, id }, _) => match ty {
                Some(t) => format!("(target_id = {} AND target_type = {})", self.t(id), self.t(t)),
                None => format!("target_id = {}", self.t(id)),
            },
            (Pred::RefUrl(u), _) => {
                // An absolute URL also matches its local `Type/id` when it names one.
                match super::extract::reference_value(u) {
                    Some(super::IndexValue::Ref { ty, id, .. }) if !id.is_empty() => format!(
                        "(url = {} OR (target_id = {} AND target_type = {}))",
                        self.t(u),
                        self.t(&id),
                        self.t(&ty)
                    ),
                    _ => format!("url = {}", self.t(u)),
                }
            }
            (p, _) => self.value_pred(p, "system", "code", "norm"),
        }
    }

    /// Predicates on plain value columns (also a composite's second part, whose token and
    /// string columns are `s_system`/`s_code`).
    fn value_pred(&mut self, p: &Pred, system_col: &str, code_col: &str, norm_col: &str) -> String {
        match p {
            Pred::Str(StrMode::Prefix, v) => {
                format!("({norm_col} >= {} AND {norm_col} < {})", self.t(v), self.t(&format!("{v}{MAX_CHAR}")))
            }
            Pred::Str(StrMode::Exact, v) => {
                // Through the value index (`type, param, norm`): a value equal to `v` has `v`'s
                // normalised form, so its stored `norm` starts with that form's first bytes
                // (a key clipped by the dialect keeps far more than these); the exact column then
                // decides. Without the range, `:exact` read every row of the parameter.
                let norm = super::normalize::string(v);
                let head = head_bytes(&norm, EXACT_HEAD_BYTES);
                format!(
                    "({norm_col} >= {} AND {norm_col} < {} AND exact = {})",
                    self.t(head),
                    self.t(&format!("{head}{MAX_CHAR}")),
                    self.t(v)
                )
            }
            Pred::Str(StrMode::Contains, v) => {
                format!("{} LIKE {} ESCAPE '\\'", unindexed_if_short(norm_col, v), self.t(&like_contains(v)))
            }
            Pred::Token { system, code } => {
                let mut parts = Vec::new();
                if let Some(c) = code {
                    parts.push(format!("{code_col} = {}", self.t(c)));
                }
                if let Some(s) = system {
                    parts.push(format!("{system_col} = {}", self.t(s)));
                }
                if parts.is_empty() { "1 = 0".into() } else { format!("({})", parts.join(" AND ")) }
            }
            Pred::TokenText(v) => {
                format!("{} LIKE {} ESCAPE '\\'", unindexed_if_short("text", v), self.t(&like_contains(v)))
            }
            Pred::UriBelow(v) => format!("(code >= {} AND code < {})", self.t(v), self.t(&format!("{v}{MAX_CHAR}"))),
            Pred::UriAbove(v) => {
                let a = self.t(v);
                format!("(length(code) > 0 AND substr({a}, 1, length(code)) = code)")
            }
            Pred::Date { prefix, lo, hi, margin } => {
                let (lo, hi) = (*lo, *hi);
                match prefix {
                    // Every row has `lo <= hi` (schema step 7), so a row that ends by `H` starts
                    // by `H` and one that starts from `L` ends from `L`: the bounds `lo <= H` and
                    // `hi >= L` change no answer and let an index seek `[L, H]` instead of reading
                    // every row from `L` on, or up to `H`.
                    Prefix::Eq => {
                        format!("(lo >= {} AND lo <= {} AND hi <= {})", self.i(lo), self.i(hi), self.i(hi))
                    }
                    Prefix::Ne => format!("NOT (lo >= {} AND hi <= {})", self.i(lo), self.i(hi)),
                    Prefix::Gt => format!("hi > {}", self.i(hi)),
                    Prefix::Lt => format!("lo < {}", self.i(lo)),
                    Prefix::Ge => format!(
                        "(hi >= {} AND (hi > {} OR (lo >= {} AND hi <= {})))",
                        self.i(lo),
                        self.i(hi),
                        self.i(lo),
                        self.i(hi)
                    ),
                    Prefix::Le => format!(
                        "(lo <= {} AND (lo < {} OR (lo >= {} AND hi <= {})))",
                        self.i(hi),
                        self.i(lo),
                        self.i(lo),
                        self.i(hi)
                    ),
                    Prefix::Sa => format!("lo > {}", self.i(hi)),
                    Prefix::Eb => format!("hi < {}", self.i(lo)),
                    Prefix::Ap => format!(
                        "(lo <= {} AND hi >= {})",
                        self.i(hi.saturating_add(*margin)),
                        self.i(lo.saturating_sub(*margin))
                    ),
                }
            }
            Pred::Number { prefix, value, lo, hi, system, code } => {
                let v = *value;
                let mut s = match prefix {
                    // `lo <= H` as for a date (`lo <= hi` on every row).
                    Prefix::Eq => {
                        format!("(lo >= {} AND lo <= {} AND hi <= {})", self.r(*lo), self.r(*hi), self.r(*hi))
                    }
                    Prefix::Ne => format!("NOT (lo >= {} AND hi <= {})", self.r(*lo), self.r(*hi)),
                    Prefix::Gt => format!("hi > {}", self.r(v)),
                    Prefix::Lt => format!("lo < {}", self.r(v)),
                    Prefix::Ge => format!("hi >= {}", self.r(v)),
                    Prefix::Le => format!("lo <= {}", self.r(v)),
                    Prefix::Sa => format!("lo > {}", self.r(v)),
                    Prefix::Eb => format!("hi < {}", self.r(v)),
                    Prefix::Ap => {
                        let m = (v * 0.1).abs();
                        format!("(lo <= {} AND hi >= {})", self.r(v + m), self.r(v - m))
                    }
                };
                if let Some(sys) = system {
                    s = format!("({s} AND {system_col} = {})", self.t(sys));
                }
                if let Some(c) = code {
                    s = format!("({s} AND {code_col} = {})", self.t(c));
                }
                s
            }
            Pred::Ref { .. } | Pred::RefUrl(_) | Pred::Chain(_) | Pred::Composite { .. } => "1 = 0".into(),
        }
    }
}

/// Whether every value of a date or number match bounds the row's upper end from below (`hi >`,
/// `hi >=`, `hi <`: a number's `gt`, `ge` and `eb`, a date's `gt`, `ge` and `eb`), so the `hi`
/// index ([`Table::high_index`]) seeks it where the value index, ordered by `lo`, reads every
/// row of the parameter.
fn above(table: Table, any: &[Pred]) -> bool {
    !any.is_empty()
        && any.iter().all(|p| match (table, p) {
            (Table::Number, Pred::Number { prefix, .. }) | (Table::Date, Pred::Date { prefix, .. }) => {
                matches!(prefix, Prefix::Gt | Prefix::Ge | Prefix::Eb)
            }
            _ => false,
        })
}

/// How much of a normalised value the `:exact` range uses: well under the shortest key a dialect
/// clips to (600 bytes on PostgreSQL), so a clipped stored value still starts with it.
const EXACT_HEAD_BYTES: usize = 200;

/// The first `max` bytes of `s`, cut at a character boundary.
fn head_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// The column a substring needle is compared with: as it is, or — for a needle too short for a
/// trigram — as an expression no trigram index matches. A one- or two-character needle has no
/// trigram, so `pg_trgm`'s index would return every row to be rechecked (300 ms for `%ab%` over
/// 300k values where reading the parameter's rows takes a fraction); PostgreSQL's generic plan
/// cannot tell the needles apart, the statement can.
fn unindexed_if_short(col: &str, needle: &str) -> String {
    if needle.chars().count() < TRIGRAM { format!("({col} || '')") } else { col.to_string() }
}

fn like_contains(v: &str) -> String {
    let escaped = v.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

/// The sort expression of a key: the least (ascending) or greatest (descending) value.
fn sort_expr(b: &mut B, ty: &str, key: &SortKey, desc: bool) -> String {
    match key {
        // Only reached when a query's criteria no longer fit the value order (`search` answers
        // the ones that do); the id is the same order's tie-breaker.
        SortKey::Id | SortKey::Matched => "r.id".into(),
        SortKey::LastUpdated => "v.last_updated".into(),
        SortKey::Param { param, table } => {
            let agg = if desc { "MAX" } else { "MIN" };
            let col = match (table, desc) {
                (Table::Str, _) => "norm",
                (Table::Token, _) => "code",
                (Table::Date | Table::Number, false) => "lo",
                (Table::Date | Table::Number, true) => "hi",
                (Table::Ref, _) => "target_id",
                (Table::Composite, _) => "code",
            };
            let p = b.param(ty, param, "s.");
            format!("(SELECT {agg}({col}) FROM {} s WHERE s.type = r.type AND s.id = r.id AND {p})", table.name())
        }
    }
}

fn zero_of(key: &SortKey) -> &'static str {
    match key {
        SortKey::Id | SortKey::Matched => "''",
        SortKey::LastUpdated => "0",
        SortKey::Param { table: Table::Date | Table::Number, .. } => "0",
        SortKey::Param { .. } => "''",
    }
}

fn arg_of(v: &SortVal) -> Arg {
    match v {
        SortVal::Int(i) => Arg::Int(*i),
        SortVal::Real(r) => Arg::Real(*r),
        SortVal::Text(t) => Arg::Text(t.clone()),
    }
}

/// The statement listing matches in order, from the cursor, at most `limit` rows. Columns:
/// `id`, then per sort key `n{i}` (1 when the resource has no value) and `k{i}` (the value).
pub fn search(q: &SearchQuery, limit: usize, how: How) -> Sql {
    if let [(SortKey::Matched, _)] = q.sort.as_slice() {
        match value_ordered(q) {
            Some(Ordered::Str { driver, param, prefix }) => {
                return search_by_value(q, (driver, param, prefix), limit, how);
            }
            Some(Ordered::Range { param, table, pred, high }) => {
                return search_by_range(q, (param, table, pred, high), limit, how);
            }
            None => {}
        }
    }
    let mut b = B::new(how);
    let mut cols = vec!["r.id AS id".to_string()];
    for (i, (key, desc)) in q.sort.iter().enumerate() {
        let e = sort_expr(&mut b, &q.resource_type, key, *desc);
        // Missing values sort last either way.
        cols.push(format!("CASE WHEN {e} IS NULL THEN 1 ELSE 0 END AS n{i}"));
        let e2 = sort_expr(&mut b, &q.resource_type, key, *desc);
        cols.push(format!("COALESCE({e2}, {}) AS k{i}", zero_of(key)));
    }
    let (wh, from, rows) = where_clause(&mut b, q);
    if rows == Rows::Owned {
        // A walk is in id order (no sort keys) and its range holds the cursor (`walked_range`).
        let dir = id_order(q).1;
        let limit = b.i(i64::try_from(limit).unwrap_or(i64::MAX));
        let text = format!("SELECT r.id AS id FROM {from} WHERE {wh} GROUP BY r.id ORDER BY r.id {dir} LIMIT {limit}");
        return Sql { text, args: b.args };
    }
    let mut text = format!("SELECT * FROM (SELECT {} FROM {from} WHERE {wh}) m", cols.join(", "));
    let backwards = q.cursor.as_ref().is_some_and(|c| c.backwards);
    if let Some(c) = &q.cursor {
        text += &format!(" WHERE {}", keyset(&mut b, q, c));
    }
    let order: Vec<String> = q
        .sort
        .iter()
        .enumerate()
        .flat_map(|(i, (_, desc))| {
            let d = desc ^ backwards;
            [
                format!("n{i} {}", if backwards { "DESC" } else { "ASC" }),
                format!("k{i} {}", if d { "DESC" } else { "ASC" }),
            ]
        })
        .chain([format!("id {}", if backwards { "DESC" } else { "ASC" })])
        .collect();
    text += &format!(" ORDER BY {} LIMIT {}", order.join(", "), b.i(i64::try_from(limit).unwrap_or(i64::MAX)));
    Sql { text, args: b.args }
}

/// How a query's matches can be listed in a value index's order ([`value_ordered`]).
#[derive(Debug, Clone, Copy)]
pub enum Ordered<'a> {
    /// A string prefix (`name=山田`), in `sp_string_value`'s order: (value, id).
    Str {
        /// The criterion's position in the query.
        driver: usize,
        /// Its parameter.
        param: &'a str,
        /// Its normalised prefix.
        prefix: &'a str,
    },
    /// A date or number range, the query's only criterion, in the order of the index of the
    /// bound it seeks ([`above`]: `hi`, else `lo`), then id.
    Range {
        /// Its parameter.
        param: &'a str,
        /// `Table::Date` or `Table::Number`.
        table: Table,
        /// Its one value.
        pred: &'a Pred,
        /// Listed by `hi` (else by `lo`).
        high: bool,
    },
}

impl Ordered<'_> {
    /// Whether a cursor's value could have been written by a page in this order (a text for a
    /// string, an integer for a date, a real for a number), so it can be bound against the
    /// column in both dialects.
    pub fn fits(&self, v: &SortVal) -> bool {
        matches!(
            (self, v),
            (Ordered::Str { .. }, SortVal::Text(_))
                | (Ordered::Range { table: Table::Date, .. }, SortVal::Int(_))
                | (Ordered::Range { table: Table::Number, .. }, SortVal::Real(_))
        )
    }
}

/// The criterion that can list a query's matches in its value index's order, when there is one,
/// and no criterion needs the version's time:
/// - the driving criterion (see `where_clause`) is a single string prefix (`name=山田`) on a
///   parameter with rows of its own. Its index (`sp_string_value`: type, param, norm, then id)
///   yields the matches in (value, id) order and the statement stops after one page; ordered by
///   id, it had to gather and sort every match first — 2,439 patients and ~7,300 index rows for
///   `Patient?name=山田` at 1M resources (#9).
/// - the only criterion is one date or number value with a prefix that seeks an index (not `ne`
///   or `ap`) on a parameter with rows of its own. The index of the bound it seeks (`sp_*_high`
///   or `sp_*_value`: type, param, that bound, then — the tables are keyed by owner — id) yields
///   (bound, id) order. Ordered by id, a range holding a few percent of the type (too many to
///   gather cheaply, too few for a walk of 1,000 candidates to fill a page) was gathered and
///   sorted: `Observation?date=ge2026-11-20` (~25,000 of 980,000) 22 ms at 1M resources.
///   Beside other criteria the range could be read far before a page is found, so it is not
///   ordered so there.
pub fn value_ordered(q: &SearchQuery) -> Option<Ordered<'_>> {
    if q.criteria.iter().any(|c| matches!(c, Criterion::LastUpdated(_))) {
        return None;
    }
    let mut order: Vec<(usize, &Criterion)> = q.criteria.iter().enumerate().collect();
    order.sort_by_key(|(_, c)| selectivity(c, false));
    let &(i, driver) = order.first()?;
    let Criterion::Match { param, table, any, negate: false } = driver else { return None };
    if super::extract::param(&q.resource_type, param).map(|p| &p.stored) != Some(&Stored::Own) {
        return None;
    }
    match (table, any.as_slice()) {
        (Table::Str, [Pred::Str(StrMode::Prefix, v)]) => Some(Ordered::Str { driver: i, param, prefix: v }),
        (Table::Date | Table::Number, [pred @ (Pred::Date { prefix, .. } | Pred::Number { prefix, .. })])
            if q.criteria.len() == 1 && !matches!(prefix, Prefix::Ne | Prefix::Ap) =>
        {
            Some(Ordered::Range { param, table: *table, pred, high: above(*table, std::slice::from_ref(pred)) })
        }
        _ => None,
    }
}

/// [`search`] in the order of [`Ordered::Range`]: each resource listed once, at the least (by
/// the ordering bound, then the other bound, then a number's unit) of its rows that match; the
/// cursor carries that row's bound. The value predicate is written unqualified twice: outside
/// it reads the listed row `d`, inside the `NOT EXISTS` the resource's other row `e` (SQL's
/// innermost scope).
fn search_by_range(
    q: &SearchQuery,
    (param, table, pred, high): (&str, Table, &Pred, bool),
    limit: usize,
    how: How,
) -> Sql {
    let mut b = B::new(how);
    let ty = q.resource_type.as_str();
    let name = table.name();
    let (key, other) = if high { ("hi", "lo") } else { ("lo", "hi") };
    // SQLite is held to the index in order and, for the other rows, to the owner key (left to
    // itself it may read the bound's range of the whole parameter per row, as for a check).
    let (listed, owned) = if b.how.subs == Substrings::Fts5 {
        let index = if high { table.high_index() } else { table.value_index() };
        (format!(" INDEXED BY {index}"), format!(" INDEXED BY {}", table.owner_index()))
    } else {
        (String::new(), String::new())
    };
    let t = b.t(ty);
    let p = b.param(ty, param, "d.");
    let matched = b.value_pred(pred, "system", "code", "norm");
    let pe = b.param(ty, param, "e.");
    let matched_e = b.value_pred(pred, "system", "code", "norm");
    let tie = match table {
        Table::Number => format!(
            "e.{other} < d.{other} OR (e.{other} = d.{other} AND (e.system < d.system OR (e.system = d.system AND e.code < d.code)))"
        ),
        _ => format!("e.{other} < d.{other}"),
    };
    let parts = vec![
        format!("d.type = {t}"),
        p,
        matched,
        format!(
            "NOT EXISTS (SELECT 1 FROM {name} e{owned} WHERE e.type = d.type AND e.id = d.id AND {pe} AND {matched_e} \
             AND (e.{key} < d.{key} OR (e.{key} = d.{key} AND ({tie}))))"
        ),
    ];
    by_value_page(b, q, &format!("{name} d{listed}"), &format!("d.{key}"), parts, limit)
}

/// The page of a listing in (value, id) order from index rows `d` ([`search_by_value`],
/// [`search_by_range`]): `parts` (the rows' conditions) from the cursor on — its value and id,
/// backwards too — at most `limit` rows, with the columns of [`search`].
fn by_value_page(mut b: B, q: &SearchQuery, from: &str, key: &str, mut parts: Vec<String>, limit: usize) -> Sql {
    let backwards = q.cursor.as_ref().is_some_and(|c| c.backwards);
    if let Some(c) = &q.cursor
        && let Some((_, v)) = c.keys.first()
    {
        let op = if backwards { "<" } else { ">" };
        let (k1, k2, id) = (b.push(arg_of(v)), b.push(arg_of(v)), b.t(&c.id));
        parts.push(format!("({key} {op} {k1} OR ({key} = {k2} AND d.id {op} {id}))"));
    }
    let dir = if backwards { "DESC" } else { "ASC" };
    let limit = b.i(i64::try_from(limit).unwrap_or(i64::MAX));
    Sql {
        text: format!(
            "SELECT d.id AS id, 0 AS n0, {key} AS k0 FROM {from} WHERE {} ORDER BY {key} {dir}, d.id {dir} LIMIT {limit}",
            parts.join(" AND ")
        ),
        args: b.args,
    }
}

/// [`search`] in the order of [`value_ordered`]'s criterion `driver`: each resource is listed
/// once, at the least of its rows that match (the one no other matching row of the same resource
/// precedes); the other criteria are checked per row; the cursor carries that row's value.
fn search_by_value(q: &SearchQuery, (driver, param, v): (usize, &str, &str), limit: usize, how: How) -> Sql {
    let mut b = B::new(how);
    let ty = q.resource_type.as_str();
    let t = b.t(ty);
    let p = b.param(ty, param, "d.");
    let lo = b.t(v);
    let hi = b.t(&format!("{v}{MAX_CHAR}"));
    let pe = b.param(ty, param, "e.");
    let mut parts = vec![
        format!("d.type = {t}"),
        p,
        format!("d.norm >= {lo} AND d.norm < {hi}"),
        format!(
            "NOT EXISTS (SELECT 1 FROM sp_string e WHERE e.type = d.type AND e.id = d.id AND {pe} AND e.norm >= {lo} \
             AND (e.norm < d.norm OR (e.norm = d.norm AND e.exact < d.exact)))"
        ),
    ];
    for (i, c) in q.criteria.iter().enumerate() {
        if i != driver {
            parts.push(check(&mut b, ty, c, "d.id"));
        }
    }
    // The cursor's value is a text (`parse::finish` refuses any other for this order).
    by_value_page(b, q, "sp_string d", "d.norm", parts, limit)
}

/// The statement counting every match (no guard applied: callers decide when it may be shown).
pub fn count(q: &SearchQuery, how: How) -> Sql {
    let mut b = B::new(how);
    let (wh, from, rows) = where_clause(&mut b, q);
    let n = if rows == Rows::Owned { "COUNT(DISTINCT r.id)" } else { "COUNT(*)" };
    Sql { text: format!("SELECT {n} FROM {from} WHERE {wh}"), args: b.args }
}

/// How well a criterion narrows the candidates (lower drives the query).
/// `walk`: a dense walkable criterion is checked per candidate, like a negation.
fn selectivity(c: &Criterion, walk: bool) -> u8 {
    match c {
        c if walk && walkable(c) => 9,
        Criterion::Id(_) => 0,
        Criterion::LastUpdated(_) => 5,
        Criterion::Match { negate: true, .. } | Criterion::Missing { .. } => 9,
        Criterion::Match { table: Table::Ref, any, .. } if any.iter().all(|p| !matches!(p, Pred::Chain(_))) => 1,
        Criterion::Match { table: Table::Str | Table::Token | Table::Composite, .. } => 2,
        Criterion::Match { .. } => 3,
        Criterion::Has { .. } => 4,
    }
}

/// How a statement's candidates `r` come, beside its `WHERE` clause and `FROM` ([`where_clause`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rows {
    /// One row per resource.
    Resources,
    /// A walk of the driving criterion's own index rows ([`walks_own_rows`]): a resource with
    /// several matching rows comes once per row, so the statement groups by `r.id` — and, to keep
    /// the page's `LIMIT` stopping the scan, at its top level in id order.
    Owned,
}

/// Whether the walked criterion `c` is read from its own index rows in owner order (`sp_ref`
/// and `sp_token` are keyed by type, id, parameter, …) rather than checked on each resource of
/// the walk's range by key: a chain (`Observation?subject:Patient.name=山田`) or a token match
/// (`Observation?code=8310-5`) — each candidate's rows were a seek into a large index table,
/// where they follow one another in the table's own order. At 1M resources (980,000
/// Observations) the walk of a page of 50: the chain (~10 % matching, 513 candidates) 1.08 →
/// 0.78 ms, the code (~25 %, four token parameters per Observation) 0.53 → 0.36 ms. SQLite only
/// ([`WalkBound::Range`]); not where the version's time is read (the walk joins `versions`
/// by the resource's `seq`). Dates and numbers are not measured yet and keep the resources.
fn walks_own_rows(c: &Criterion, how: How, uses_time: bool) -> bool {
    matches!(c, Criterion::Match { table: Table::Ref | Table::Token, negate: false, .. })
        && counted(c)
        && how.walk
        && how.bound == WalkBound::Range
        && !uses_time
}

/// The `WHERE` clause and the `FROM` it needs, and how its candidates come.
fn where_clause(b: &mut B, q: &SearchQuery) -> (String, String, Rows) {
    // The most selective criterion drives the query through its value index (its rows are the
    // candidates `r`); the others are checked per candidate through the owner index
    // (`EXISTS … id = r.id`), so a common code never materialises all its matches.
    let mut order: Vec<&Criterion> = q.criteria.iter().collect();
    let walk = b.how.walk;
    // A merged criterion (`search_merged`) drives, whatever the others.
    let merged = if b.merge.is_some() { gathered_driver(q) } else { None };
    let is_merged = |c: &Criterion| merged.is_some_and(|m| std::ptr::eq(m, c));
    order.sort_by_key(|c| (!is_merged(c), selectivity(c, walk)));
    // A dense walkable criterion is walked: the resources in id order, each checked
    // (`EXISTS`), so the statement stops after a page instead of gathering every match.
    let walked = |c: &Criterion| walk && walkable(c);
    // Index rows exist only for live resources (a deletion removes them, in its own
    // transaction), so when an index match drives the query its candidates are live and the
    // current version need not be read for its method — at 1M resources that read was a random
    // page of the version table per candidate (issue #9). The version is joined only for a
    // deletion check or its time.
    let uses_time = q.sort.iter().any(|(k, _)| matches!(k, SortKey::LastUpdated))
        || q.criteria.iter().any(|c| matches!(c, Criterion::LastUpdated(_)));
    let mut parts = vec![format!("r.type = {}", b.t(&q.resource_type))];
    let mut rows = Rows::Resources;
    let (from, driven) = match order.first() {
        Some(c @ Criterion::Match { param, .. }) if !uses_time && is_merged(c) => (merged_from(b, q, param), true),
        // The driving index rows are the candidates themselves: `resources` is not read at all
        // (it was one random b-tree probe per candidate, a third of the page reads of
        // `Observation?patient=X&code=Y` at 1M resources, #9).
        Some(c @ Criterion::Match { param, table, any, negate: false }) if !uses_time && !walked(c) => {
            let m = b.match_from(&q.resource_type, param, *table, any, Role::List);
            (format!("(SELECT DISTINCT x.type AS type, x.id AS id {m}) r"), true)
        }
        // A walked substring match is checked on the candidate's own index rows, which only a
        // live resource has: the walk reads `resources` alone, in (type, id) order, and stops
        // after a page (joining the version for its method was one random read per candidate).
        // The walk reads at most `WALK_CANDIDATES` of them, from the cursor on (a walk is only
        // tried in id order, so the cursor is an id).
        //
        // The walk is a range of the type's ids — from the cursor to the last of the next
        // `WALK_CANDIDATES` — read in id order, so the page's `ORDER BY id LIMIT` stops the
        // scan after a page. (A subquery with its own `LIMIT` as the candidates made SQLite
        // check all 1,000 and sort them before taking a page: for `name:contains=やまだ` among
        // 20,000 patients the statement alone took ~2 ms instead of ~1 ms.)
        // (A walk is in id order; the check on `q.sort` only keeps the statement's shape honest.)
        Some(c @ Criterion::Match { param, table, any, .. })
            if walked(c) && walks_own_rows(c, b.how, uses_time) && q.sort.is_empty() =>
        {
            parts.push(walked_range(b, q));
            let (own, cond) = b.rows_matching(&q.resource_type, param, *table, any, Role::Check, "r");
            parts.push(cond);
            rows = Rows::Owned;
            (own, true)
        }
        Some(c) if walked(c) => {
            let resources = match b.how.bound {
                WalkBound::Range => {
                    parts.push(walked_range(b, q));
                    "resources r".to_string()
                }
                WalkBound::Subquery => format!("({}) r", walked_ids(b, q, "type, id, seq")),
            };
            if uses_time {
                // The version's time is checked on the candidate's current version.
                parts.push("v.method <> 'delete'".to_string());
                (format!("{resources} JOIN versions v ON v.seq = r.seq"), false)
            } else {
                (resources, false)
            }
        }
        _ => {
            parts.push("v.method <> 'delete'".to_string());
            ("resources r JOIN versions v ON v.seq = r.seq".to_string(), false)
        }
    };
    for (i, c) in order.into_iter().enumerate() {
        match c {
            _ if i == 0 && driven => {}
            // Dense, the driving range is checked on each candidate's version in order too.
            Criterion::LastUpdated(any) if i > 0 || walked(c) || b.how.dense_time => {
                parts.push(b.last_updated(any, "v.last_updated"))
            }
            c if i > 0 || walked(c) => parts.push(check(b, &q.resource_type, c, "r.id")),
            c => parts.push(b.cond(c, &q.resource_type, "r.id")),
        }
    }
    (parts.join(" AND "), from, rows)
}

/// The ids a walk reads: at most [`WALK_CANDIDATES`] of the type from the cursor on, in id order
/// (a walk is only tried in id order, so the cursor is an id).
fn walked_ids(b: &mut B, q: &SearchQuery, columns: &str) -> String {
    let t = b.t(&q.resource_type);
    let (after, dir) = id_order(q);
    let after = after.map(|(id, op)| format!(" AND id {op} {}", b.t(id))).unwrap_or_default();
    let bound = b.i(WALK_CANDIDATES);
    format!("SELECT {columns} FROM resources WHERE type = {t}{after} ORDER BY id {dir} LIMIT {bound}")
}

/// The condition on the candidate `r.id` that keeps it among the ids [`walked_ids`] reads: after
/// the cursor and up to the last of them (its first, backwards). No id is in range when none is
/// left (the bound is `NULL`).
fn walked_range(b: &mut B, q: &SearchQuery) -> String {
    let (after, dir) = id_order(q);
    let cursor = after.map(|(id, op)| format!(" AND r.id {op} {}", b.t(id))).unwrap_or_default();
    let last = if dir == "DESC" { ">= (SELECT MIN(id)" } else { "<= (SELECT MAX(id)" };
    format!("r.id {last} FROM ({}) w){cursor}", walked_ids(b, q, "id"))
}

/// How many resources a walk of `q` reads (the same bounded scan of the type's ids, without the
/// checks), and the last of them in the walk's order: when it is fewer than
/// [`WALK_CANDIDATES`], a walk short of a page reached the last resource, so its page is exact
/// and need not be gathered again; otherwise the next walk may start after the last one read
/// ([`WALKS`]).
pub fn walk_reach(q: &SearchQuery) -> Sql {
    let mut b = B::new(How::new(Substrings::Like));
    let last = if id_order(q).1 == "DESC" { "MIN" } else { "MAX" };
    let text = format!("SELECT COUNT(*), {last}(id) FROM ({}) w", walked_ids(&mut b, q, "id"));
    Sql { text, args: b.args }
}

/// How many walks of [`WALK_CANDIDATES`] a page may take, each from where the last stopped,
/// before the store gathers instead: a page of criteria that are each dense but rare together
/// (`subject:Patient.name=鈴木&code=8310-5`, ~3 % of the Observations: ~1,700 candidates for a
/// page of 50) was gathered — every match of the densest, 0.26 s at 1M resources — after one
/// walk fell short. Four walks cost at most ~4,000 checks (~8–16 ms); a gather costs at least
/// [`DENSE_ROWS`] rows and, where a walk was chosen, mostly far more.
pub const WALKS: usize = 4;

/// A criterion checked for one candidate (its id in `col`) rather than driving the query: a
/// match through the owner index (`EXISTS … x.id = col`), anything else as its condition.
fn check(b: &mut B, ty: &str, c: &Criterion, col: &str) -> String {
    match c {
        Criterion::Match { param, table, any, negate } => {
            let from = b.match_from(ty, param, *table, any, Role::Check);
            format!("{}EXISTS (SELECT 1 {from} AND x.id = {col})", if *negate { "NOT " } else { "" })
        }
        // The candidate's referrers found by key (`sp_ref_value`), each checked likewise: as
        // `col IN (…)` the store listed every referrer matching the criterion first —
        // `Patient?name=山田&_has:Observation:subject:code=8310-5` read 49,000 Observations at
        // 200k resources for a page (65 ms; by key ~1 ms).
        Criterion::Has { source, param, inner } => {
            let s = b.t(source);
            let p = b.param(source, param, "h.");
            let tt = b.t(ty);
            let inner = check(b, source, inner, "h.id");
            format!(
                "EXISTS (SELECT 1 FROM sp_ref h WHERE h.type = {s} AND {p} AND h.target_id = {col} AND h.target_type = {tt} AND {inner})"
            )
        }
        c => b.cond(c, ty, col),
    }
}

/// Rows strictly after (or, backwards, before) the cursor in the sort order.
fn keyset(b: &mut B, q: &SearchQuery, c: &Cursor) -> String {
    // Innermost: the id breaks ties.
    let mut acc = format!("id {} {}", if c.backwards { "<" } else { ">" }, b.t(&c.id));
    for (i, ((_, desc), (missing, val))) in q.sort.iter().zip(&c.keys).enumerate().rev() {
        let k_after = if desc ^ c.backwards { "<" } else { ">" };
        let n_after = if c.backwards { "<" } else { ">" };
        let n = i64::from(*missing);
        // (n > cur_n) OR (n = cur_n AND ((k after cur_k) OR (k = cur_k AND rest)))
        let (n1, n2) = (b.i(n), b.i(n));
        let (k1, k2) = (b.push(arg_of(val)), b.push(arg_of(val)));
        acc = format!("(n{i} {n_after} {n1} OR (n{i} = {n2} AND (k{i} {k_after} {k1} OR (k{i} = {k2} AND {acc}))))");
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query of a search of `ty` (parsed as the API does).
    fn query(ty: &str, q: &str) -> SearchQuery {
        super::super::parse_search(ty, q, false, 0)
            .map_err(|e| format!("{e:?}"))
            .unwrap_or_else(|e| panic!("{e}"))
            .query
    }

    /// A `_has` that does not drive is checked on each candidate by key (the candidate's
    /// referrers through `sp_ref_value`, each referrer's criterion through its own rows), not by
    /// listing every referrer matching the criterion; one that drives still lists them.
    #[test]
    fn a_has_checked_per_candidate_is_sought_by_key() {
        let q = query("Patient", "name=yamada&_has:Observation:subject:code=8310-5");
        let s = search(&q, 10, How::new(Substrings::Fts5));
        assert!(
            s.text.contains("EXISTS (SELECT 1 FROM sp_ref h WHERE h.type = ?")
                && s.text.contains("AND h.target_id = d.id AND h.target_type = ?")
                && s.text.contains("AND x.id = h.id)"),
            "{}",
            s.text
        );
        assert!(!s.text.contains("IN (SELECT h.target_id"), "{}", s.text);
        let alone = query("Patient", "_has:Observation:subject:code=8310-5");
        let gathered = search(&alone, 10, How::new(Substrings::Fts5));
        assert!(gathered.text.contains("IN (SELECT h.target_id FROM sp_ref h"), "{}", gathered.text);
        // Its density is its criterion's rows on the referring type; dense, the candidates are
        // walked and each checked by key.
        let Density::Probe(p) = walk_density(&alone, Substrings::Fts5, 11) else { panic!("a _has is probed") };
        assert!(p.text.contains("FROM sp_token x") && !p.text.contains("sp_ref"), "{}", p.text);
        let walked = search(&alone, 10, How { walk: true, ..How::new(Substrings::Fts5) });
        assert!(
            walked.text.contains("r.id <= (SELECT MAX(id)") && walked.text.contains("AND h.target_id = r.id"),
            "{}",
            walked.text
        );
        // A `_has` whose criterion is a chain or a negation is not probed: gathered.
        for other in ["_has:Observation:subject:code:not=8310-5", "_has:Observation:subject:performer.name=x"] {
            assert_eq!(walk_density(&query("Patient", other), Substrings::Fts5, 11), Density::NotWalkable, "{other}");
        }
    }

    #[test]
    fn the_exact_range_head_is_cut_at_a_character_boundary() {
        assert_eq!(head_bytes("やまだ", 200), "やまだ");
        // 3-byte characters: 7 bytes keep two of them.
        assert_eq!(head_bytes("やまだ", 7), "やま");
        assert_eq!(head_bytes("", 200), "");
        let long = "髙".repeat(100);
        assert!(head_bytes(&long, EXACT_HEAD_BYTES).len() <= EXACT_HEAD_BYTES);
        assert!(long.starts_with(head_bytes(&long, EXACT_HEAD_BYTES)));
    }

    /// A `:contains` of three or more characters goes through SQLite's trigram table (on both
    /// value tables); a shorter one, or PostgreSQL's dialect, stays `LIKE` (which `pg_trgm`
    /// serves there).
    #[test]
    fn substrings_use_the_trigram_table_where_it_can_serve_them() {
        let query = |q: &str, subs: Substrings| {
            let req = super::super::parse_search("Patient", q, false, 0)
                .map_err(|e| format!("{e:?}"))
                .unwrap_or_else(|e| panic!("{e}"));
            let s = search(&req.query, 10, How::new(subs));
            (s.text.contains("sp_text_fts MATCH"), s.text.contains("LIKE"))
        };
        assert_eq!(query("family:contains=yamada", Substrings::Fts5), (true, true));
        assert_eq!(query("family:contains=ya", Substrings::Fts5), (false, true));
        assert_eq!(query("family:contains=yamada,ya", Substrings::Fts5), (false, true));
        assert_eq!(query("family:contains=yamada", Substrings::Like), (false, true));
        assert_eq!(query("general-practitioner:Practitioner.name:contains=yamada", Substrings::Fts5), (true, true));
        assert_eq!(query("family=yamada", Substrings::Fts5), (false, false));
    }

    /// Only a walkable criterion that would drive the query is probed; a short needle walks
    /// without a probe; a walked criterion is checked per candidate (`EXISTS`), never gathered.
    #[test]
    fn a_dense_substring_is_walked() {
        let req = |q: &str| {
            super::super::parse_search("Patient", q, false, 0)
                .map_err(|e| format!("{e:?}"))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let density = |q: &str| walk_density(&req(q).query, Substrings::Fts5, 11);
        assert!(matches!(density("name:contains=yamada"), Density::Probe(p) if p.text.contains("LIMIT")));
        assert_eq!(density("name:contains=ya"), Density::Short);
        assert_eq!(density("name=yamada"), Density::NotWalkable);
        assert_eq!(density("name:contains=yamada&_id=a,b"), Density::NotWalkable, "the ids drive");
        assert_eq!(density("name:contains=yamada&_sort=birthdate"), Density::NotWalkable, "not in id order");
        // A chain is probed by its references (no dictionary), and walked when dense.
        let chain = |q: &str| query("Observation", q);
        let q = chain("subject:Patient.name=yamada");
        let Density::Probe(p) = walk_density(&q, Substrings::Fts5, 11) else { panic!("a chain is probed") };
        // Its references are read from the targets' rows on, each target's as its row comes (no
        // list of every target first), up to the bound.
        assert!(
            p.text.starts_with(
                "SELECT 0, (SELECT COUNT(*) FROM (SELECT 1 FROM (SELECT y.id AS id FROM sp_string y INDEXED BY sp_string_value"
            ) && p.text.contains(") t CROSS JOIN sp_ref x INDEXED BY sp_ref_value WHERE")
                && p.text.contains("AND x.target_id = t.id LIMIT"),
            "{}",
            p.text
        );
        assert!(!p.text.contains(" IN (SELECT"), "{}", p.text);
        assert!(p.args.contains(&Arg::Int(DENSE_ROWS)), "{p:?}");
        // A chain the join form does not serve (two target types, a negation, a substring
        // through the trigram index) is probed as before.
        for other in ["performer.name=yamada", "subject:Patient.name:contains=yamada"] {
            let Density::Probe(p) = walk_density(&chain(other), Substrings::Fts5, 11) else { panic!("{other}") };
            assert!(p.text.contains("SELECT 1 FROM sp_ref x") && !p.text.contains("CROSS JOIN"), "{other}: {}", p.text);
        }
        let walked = search(&q, 10, How { walk: true, ..How::new(Substrings::Fts5) });
        // Walked on SQLite, the candidates are the chain's own reference rows in owner order
        // (not each resource of the range with its references sought by key), grouped by
        // resource at the statement's top level so that its `LIMIT` stops the scan.
        assert!(
            walked.text.starts_with("SELECT r.id AS id FROM sp_ref r INDEXED BY sqlite_autoindex_sp_ref_1 WHERE")
                && walked.text.contains(" GROUP BY r.id ORDER BY r.id ASC LIMIT ?"),
            "{}",
            walked.text
        );
        assert!(!walked.text.contains("FROM sp_ref x") && !walked.text.contains("resources r"), "{}", walked.text);
        // Walked, each candidate's own references are tested against each target's own rows, by
        // key: not the targets sought, nor listed for the statement.
        assert!(
            walked
                .text
                .contains("EXISTS (SELECT 1 FROM sp_string y INDEXED BY sqlite_autoindex_sp_string_1 WHERE y.type = ?")
                && walked.text.contains("AND y.id = r.target_id)"),
            "{}",
            walked.text
        );
        // Backwards from a cursor: the range and the order turn.
        let mut before = q.clone();
        before.cursor = Some(Cursor { keys: Vec::new(), id: "o5".into(), backwards: true });
        let back = search(&before, 10, How { walk: true, ..How::new(Substrings::Fts5) });
        assert!(
            back.text.contains("r.id >= (SELECT MIN(id)")
                && back.text.contains(" AND r.id < ?")
                && back.text.contains(" GROUP BY r.id ORDER BY r.id DESC LIMIT ?"),
            "{}",
            back.text
        );
        // Counted, each resource once.
        assert!(
            count(&q, How { walk: true, ..How::new(Substrings::Fts5) })
                .text
                .starts_with("SELECT COUNT(DISTINCT r.id) FROM sp_ref r")
        );
        // Beside the version's time, the walk reads the resources (joined to their versions).
        let timed = search(
            &chain("subject:Patient.name=yamada&_lastUpdated=gt2020"),
            10,
            How { walk: true, ..How::new(Substrings::Fts5) },
        );
        assert!(
            timed.text.contains("JOIN versions v") && timed.text.contains("EXISTS (SELECT 1 FROM sp_ref x WHERE"),
            "{}",
            timed.text
        );
        assert!(!walked.text.contains("IN (SELECT x.id FROM sp_string"), "{}", walked.text);
        assert!(walked.text.contains("r.id <= (SELECT MAX(id) FROM (SELECT id FROM resources"), "{}", walked.text);
        // PostgreSQL's walk takes its candidates from the subquery of the next ids (it plans for
        // that many), the cursor inside it; the checks are the same.
        let mut next = q.clone();
        next.cursor = Some(Cursor { keys: Vec::new(), id: "o5".into(), backwards: false });
        let pg = search(&next, 10, How { walk: true, bound: WalkBound::Subquery, ..How::new(Substrings::Like) });
        assert!(
            pg.text.contains("FROM (SELECT type, id, seq FROM resources WHERE type = ?")
                && pg.text.contains(" AND id > ?")
                && pg.text.contains("ORDER BY id ASC LIMIT ?"),
            "{}",
            pg.text
        );
        assert!(!pg.text.contains("MAX(id)") && pg.text.contains("AND y.id = x.target_id)"), "{}", pg.text);
        // Gathered, the set of matching targets serves every candidate.
        let gathered = search(&chain("subject:Patient.name=yamada&code=8310-5"), 10, How::new(Substrings::Fts5));
        assert!(gathered.text.contains("(target_id || '') IN (SELECT x.id FROM sp_string"), "{}", gathered.text);
        // Where a walk stopped: how many it read and the last in its order.
        let mut back = q.clone();
        assert!(walk_reach(&q).text.starts_with("SELECT COUNT(*), MAX(id) FROM (SELECT id FROM resources"));
        back.cursor = Some(Cursor { keys: Vec::new(), id: "o5".into(), backwards: true });
        let r = walk_reach(&back);
        assert!(
            r.text.starts_with("SELECT COUNT(*), MIN(id) FROM") && r.text.contains("ORDER BY id DESC"),
            "{}",
            r.text
        );
        assert!(walked.args.contains(&Arg::Int(WALK_CANDIDATES)) && !walked.text.contains("DISTINCT"), "{walked:?}");
        assert_eq!(walk_density(&chain("subject=Patient/p1"), Substrings::Fts5, 11), Density::NotWalkable);
        // A token, date or number match is counted the same way (a range alone is listed by its
        // bound instead, `a_range_alone_is_listed_in_its_index_order`: here in id order, as
        // beside a criterion checked per candidate); a negation never drives.
        for q in ["code=8310-5", "date=ge2020", "value-quantity=gt50", "status=final&code=8310-5"] {
            let mut q = chain(q);
            q.sort.clear();
            let d = walk_density(&q, Substrings::Fts5, 11);
            assert!(
                matches!(&d, Density::Probe(p) if p.text.starts_with("SELECT 0, (SELECT COUNT(*)")),
                "{q:?}: {d:?}"
            );
        }
        // Walked, a token match reads its own rows too; a date keeps the resources (unmeasured).
        let walk = How { walk: true, ..How::new(Substrings::Fts5) };
        let token = search(&chain("code=8310-5"), 10, walk);
        assert!(
            token.text.starts_with("SELECT r.id AS id FROM sp_token r INDEXED BY sqlite_autoindex_sp_token_1 WHERE")
                && token.text.contains(" GROUP BY r.id ORDER BY r.id ASC LIMIT ?"),
            "{}",
            token.text
        );
        let mut dq = chain("date=ge2020");
        dq.sort.clear();
        let date = search(&dq, 10, walk);
        assert!(date.text.contains("FROM resources r") && !date.text.contains("GROUP BY"), "{}", date.text);
        let pg = search(&chain("code=8310-5"), 10, How { bound: WalkBound::Subquery, ..walk });
        assert!(!pg.text.contains("GROUP BY") && pg.text.contains("EXISTS (SELECT 1 FROM sp_token x"), "{}", pg.text);
        assert_eq!(walk_density(&chain("code:not=8310-5"), Substrings::Fts5, 11), Density::NotWalkable);
        let by_ref = walk_density(&chain("status=final&subject=Patient/p1"), Substrings::Fts5, 11);
        assert_eq!(by_ref, Density::NotWalkable, "a reference drives");
        assert_eq!(
            walk_density(&chain("subject:Patient.name=yamada&_id=a"), Substrings::Fts5, 11),
            Density::NotWalkable
        );
        let big = walk_density(&req("name:contains=yamada").query, Substrings::Fts5, WALK_PAGE + 1);
        assert_eq!(big, Density::NotWalkable, "a page a bounded walk would seldom fill");
        assert!(!dense(PROBE_VALUES - 1, DENSE_ROWS - 1));
        assert!(dense(PROBE_VALUES, 0) && dense(0, DENSE_ROWS));
        let walked = search(&req("name:contains=yamada").query, 10, How { walk: true, ..How::new(Substrings::Fts5) });
        assert!(walked.text.contains("EXISTS (SELECT 1 FROM sp_string x WHERE"), "{}", walked.text);
        // The walk checks each candidate's own rows, never the dictionary, and reads at most
        // WALK_CANDIDATES resources without their versions.
        assert!(!walked.text.contains("sp_text"), "{}", walked.text);
        assert!(
            walked.text.contains("FROM resources WHERE type = ?") && !walked.text.contains("versions"),
            "{}",
            walked.text
        );
        assert!(walked.args.contains(&Arg::Int(WALK_CANDIDATES)), "{walked:?}");
        assert!(!walked.text.contains("DISTINCT"), "{}", walked.text);
        let gathered = search(&req("name:contains=yamada").query, 10, How::new(Substrings::Fts5));
        assert!(gathered.text.contains("SELECT DISTINCT"), "{}", gathered.text);
        // How far a walk reads: the same scan of ids from the same cursor, with the same bound.
        let mut q = req("name:contains=yamada").query;
        q.cursor = Some(Cursor { id: "p-500".into(), keys: Vec::new(), backwards: true });
        let (walked, reach) = (search(&q, 10, How { walk: true, ..How::new(Substrings::Fts5) }), walk_reach(&q));
        let scan = |first: usize| {
            format!(
                "FROM resources WHERE type = ?{first} AND id < ?{} ORDER BY id DESC LIMIT ?{}",
                first + 1,
                first + 2
            )
        };
        assert_eq!(reach.text, format!("SELECT COUNT(*), MIN(id) FROM (SELECT id {}) w", scan(1)));
        // The walk is a range of ids read in order (its page's LIMIT stops it), not a subquery
        // of candidates that would be read whole and sorted.
        let range = format!(
            "FROM resources r WHERE r.type = ?1 AND r.id >= (SELECT MIN(id) FROM (SELECT id {}) w) AND r.id < ?2",
            scan(3)
        );
        assert!(walked.text.contains(&range), "{}", walked.text);
        // A needle held by few values is merged by value: each value's first page of ids from the
        // cursor, through the value index, however the matches are spread.
        let values = merge_values(&q, Substrings::Fts5, 10).unwrap_or_else(|| panic!("a contains on a string merges"));
        assert!(values.text.contains("sp_text_fts MATCH") && values.args.contains(&Arg::Int(MERGE_VALUES)));
        assert!(merge_values(&q, Substrings::Like, 10).is_none(), "PostgreSQL has no dictionary");
        assert!(merge_values(&req("name:contains=ya").query, Substrings::Fts5, 10).is_none(), "no trigram");
        assert!(
            merge_values(&req("gender:text=mal").query, Substrings::Fts5, 10).is_none(),
            "token texts have no id order"
        );
        let merged = search_merged(
            &q,
            10,
            How::new(Substrings::Fts5),
            &[Arm::value("yamada".into()), Arm::value("yamadaya".into())],
        );
        // One merge of the values' ranges (padded to eight by repeating the last), read in id
        // order from the cursor and stopped after a page — no range read whole, no DISTINCT.
        assert_eq!(merged.text.matches("INDEXED BY sp_string_value").count(), 8, "{}", merged.text);
        assert_eq!(merged.text.matches("AND x.id < ?").count(), 8, "{}", merged.text);
        assert_eq!(merged.text.matches(" UNION SELECT ").count(), 7, "{}", merged.text);
        assert_eq!(merged.text.matches("ORDER BY 1 DESC LIMIT ?").count(), 1, "{}", merged.text);
        assert!(!merged.text.contains("DISTINCT") && !merged.text.contains("UNION ALL"), "{}", merged.text);
        assert_eq!(merged.args.iter().filter(|a| **a == Arg::Text("yamadaya".into())).count(), 7, "{merged:?}");
        assert!(merged.args.contains(&Arg::Int(10)), "{merged:?}");
        // With other criteria to check, the merge reads more candidates than a page.
        let mut with_gender = req("name:contains=yamada&gender=male").query;
        with_gender.cursor = None;
        let wider = search_merged(&with_gender, 10, How::new(Substrings::Fts5), &[Arm::value("yamada".into())]);
        assert!(wider.text.contains("ORDER BY 1 ASC LIMIT ?"), "{}", wider.text);
        let widened = i64::try_from(10 * MERGE_WIDEN).unwrap_or(i64::MAX);
        assert!(wider.args.contains(&Arg::Int(widened)), "{wider:?}");
        assert!(!merged.text.contains("sp_text") && !merged.text.contains("versions"), "{}", merged.text);
        let none = search_merged(&q, 10, How::new(Substrings::Fts5), &[]);
        assert!(none.text.contains("WHERE 0"), "{}", none.text);
        for a in [Arg::Text("p-500".into()), Arg::Int(WALK_CANDIDATES)] {
            assert!(reach.args.contains(&a) && walked.args.contains(&a), "{a:?}: {reach:?}");
        }
    }

    /// A `:exact` criterion that drives is merged by its values' ranges: one normalised value
    /// each, checked as written on the index, read in id order and stopped after a page.
    #[test]
    fn an_exact_value_is_merged_by_its_normalised_form() {
        let req = |q: &str| query("Patient", q);
        let q = req("family:exact=%EF%BE%94%EF%BE%8F%EF%BE%80%EF%BE%9E,Yamada");
        let arms = exact_arms(&q, Substrings::Fts5, 10).unwrap_or_else(|| panic!("an exact on a string merges"));
        assert_eq!(
            arms,
            [
                Arm { norm: super::super::normalize::string("ﾔﾏﾀﾞ"), exact: Some("ﾔﾏﾀﾞ".into()) },
                Arm { norm: "yamada".into(), exact: Some("Yamada".into()) }
            ]
        );
        assert!(exact_arms(&q, Substrings::Like, 10).is_none(), "PostgreSQL clips its keys");
        assert!(exact_arms(&q, Substrings::Fts5, WALK_PAGE + 1).is_none());
        assert!(exact_arms(&req("family:exact=Yamada&_sort=birthdate"), Substrings::Fts5, 10).is_none());
        assert!(exact_arms(&req("family:exact=Yamada&_id=a"), Substrings::Fts5, 10).is_none(), "the ids drive");
        assert!(exact_arms(&req("family=Yamada"), Substrings::Fts5, 10).is_none());
        assert!(exact_arms(&req("family:contains=Yamada"), Substrings::Fts5, 10).is_none());
        let merged = search_merged(&q, 10, How::new(Substrings::Fts5), &arms);
        assert_eq!(merged.text.matches("INDEXED BY sp_string_value").count(), 2, "{}", merged.text);
        assert_eq!(merged.text.matches(" AND x.exact = ?").count(), 2, "{}", merged.text);
        assert!(merged.text.contains("x.norm = ?4 AND x.exact = ?5"), "{}", merged.text);
        assert_eq!(merged.text.matches("ORDER BY 1 ASC LIMIT ?").count(), 1, "{}", merged.text);
        assert!(!merged.text.contains("DISTINCT") && !merged.text.contains(">="), "{}", merged.text);
        let one = search_merged(&req("family:exact=Yamada"), 10, How::new(Substrings::Fts5), &arms[1..]);
        assert!(!one.text.contains("UNION"), "one value, one range: {}", one.text);
    }

    #[test]
    fn a_last_updated_range_is_walked_from_a_walks_worth_of_versions() {
        let q = query("Observation", "_lastUpdated=ge2020-01-01");
        let how = |versions, limit| time_how(&q, limit, How::new(Substrings::Fts5), versions);
        // Few versions: gathered through the time index.
        assert_eq!(how(TIME_WALK_ROWS - 1, 20), How::new(Substrings::Fts5));
        // A walk's worth: walked first, gathered through the time index when it falls short.
        assert_eq!(how(TIME_WALK_ROWS, 20), How { walk: true, ..How::new(Substrings::Fts5) });
        // Dense: a short walk gathers by reading the type in order.
        assert_eq!(how(DENSE_ROWS, 20), How { walk: true, dense_time: true, ..How::new(Substrings::Fts5) });
        // A page too large to walk, or an order of its own: gathered only.
        assert_eq!(how(DENSE_ROWS, WALK_PAGE + 1), How { dense_time: true, ..How::new(Substrings::Fts5) });
        let sorted = query("Observation", "_lastUpdated=ge2020-01-01&_sort=-_lastUpdated");
        assert!(!time_how(&sorted, 20, How::new(Substrings::Fts5), DENSE_ROWS).walk);
    }

    #[test]
    fn last_updated_is_a_range_of_the_time_index_and_walked_when_dense() {
        let q = query("Observation", "_lastUpdated=ge2020-01-01");
        // The probe counts versions in the range through the time index.
        let p = time_density(&q, Substrings::Fts5).unwrap_or_else(|| panic!("probed"));
        assert!(p.text.contains("FROM versions INDEXED BY versions_by_time WHERE (last_updated >= ?"), "{}", p.text);
        // Gathered: the versions in the range, each its resource's current one — not every
        // resource of the type joined to its version.
        let gathered = search(&q, 10, How::new(Substrings::Fts5));
        assert!(
            gathered.text.contains("FROM versions lv INDEXED BY versions_by_time WHERE (lv.last_updated >= ?"),
            "{}",
            gathered.text
        );
        assert!(gathered.text.contains("lv.seq = (SELECT lr.seq FROM resources lr"), "{}", gathered.text);
        assert!(!gathered.text.contains("EXISTS (SELECT 1 FROM (SELECT"), "{}", gathered.text);
        // Walked: the type's resources in id order, bounded, each version's time checked.
        let walked = search(&q, 10, How { walk: true, ..How::new(Substrings::Fts5) });
        assert!(walked.text.contains("resources r JOIN versions v ON v.seq = r.seq"), "{}", walked.text);
        assert!(walked.text.contains("(v.last_updated >= ?"), "{}", walked.text);
        assert!(walked.args.contains(&Arg::Int(WALK_CANDIDATES)) && !walked.text.contains("lv."), "{walked:?}");
        // A dense range gathered (its walk fell short, a page too large to walk, a count): the
        // type's resources in order, each version's time checked — never the whole range.
        let dense = How { dense_time: true, ..How::new(Substrings::Fts5) };
        let gathered = search(&q, 10, dense);
        assert!(gathered.text.contains("(v.last_updated >= ?") && !gathered.text.contains("lv."), "{}", gathered.text);
        assert!(!gathered.args.contains(&Arg::Int(WALK_CANDIDATES)), "{gathered:?}");
        let counted = count(&q, dense);
        assert!(counted.text.contains("(v.last_updated >= ?") && !counted.text.contains("lv."), "{}", counted.text);
        let probe = time_density(&query("Observation", "_lastUpdated=ge2020&_sort=-_lastUpdated"), Substrings::Fts5);
        assert!(probe.is_some_and(|p| p.args.contains(&Arg::Int(DENSE_ROWS))), "probed whatever the order");
        assert!(time_density(&query("Observation", "code=x&_lastUpdated=ge2020"), Substrings::Fts5).is_none());
        assert_eq!(walk_density(&q, Substrings::Fts5, 11), Density::NotWalkable, "probed by time_density");
        // Beside a dense token, the token walks and the time is checked on the same version.
        let both = search(
            &query("Observation", "code=8310-5&_lastUpdated=gt2020"),
            10,
            How { walk: true, ..How::new(Substrings::Fts5) },
        );
        assert!(both.args.contains(&Arg::Int(WALK_CANDIDATES)), "{both:?}");
        assert!(both.text.contains("(v.last_updated > ?") && !both.text.contains("lv."), "{}", both.text);
        // `ne` is no range: no hint (the planner reads what it will), and PostgreSQL never has one.
        let ne = search(&query("Observation", "_lastUpdated=ne2020"), 10, How::new(Substrings::Fts5));
        assert!(ne.text.contains("NOT (lv.last_updated >= ?") && !ne.text.contains("INDEXED BY"), "{}", ne.text);
        let pg = search(&q, 10, How::new(Substrings::Like));
        assert!(!pg.text.contains("INDEXED BY"), "{}", pg.text);
    }

    #[test]
    fn a_range_alone_is_listed_in_its_index_order() {
        for (q, ordered) in [
            ("value-quantity=gt50", Some("ORDER BY d.hi ASC, d.id ASC")),
            ("date=ge2020", Some("ORDER BY d.hi ASC, d.id ASC")),
            ("date=2020", Some("ORDER BY d.lo ASC, d.id ASC")),
            ("value-quantity=lt5", Some("ORDER BY d.lo ASC, d.id ASC")),
            // Not seekable, or beside another criterion, or through another parameter's rows.
            ("date=ne2020", None),
            ("date=ap2020", None),
            ("date=ge2020&status=final", None),
            ("date=ge2020,lt2010", None),
            ("combo-value-quantity=gt5", None),
        ] {
            let q = query("Observation", q);
            let text = search(&q, 10, How::new(Substrings::Fts5)).text;
            match ordered {
                Some(order) => {
                    assert_eq!(q.sort, vec![(SortKey::Matched, false)], "{text}");
                    assert!(text.contains(order), "{text}");
                    assert!(text.contains("INDEXED BY sqlite_autoindex_sp_"), "{text}");
                }
                None => assert!(q.sort.is_empty(), "{text}"),
            }
        }
    }

    #[test]
    fn values_above_a_point_seek_the_upper_bound() {
        for (q, index) in [
            ("value-quantity=gt50", "sp_number_high"),
            ("value-quantity=ge50", "sp_number_high"),
            ("value-quantity=eb50", "sp_number_high"),
            ("value-quantity=gt50,ge70", "sp_number_high"),
            ("date=gt2030", "sp_date_high"),
            ("date=eb2021", "sp_date_high"),
            ("date=ge2020", "sp_date_high"),
            // Bounded by `lo`, or a mix: the value index.
            ("value-quantity=lt50", "sp_number_value"),
            ("value-quantity=50", "sp_number_value"),
            ("value-quantity=gt50,lt10", "sp_number_value"),
            ("date=le2020", "sp_date_value"),
            ("date=2020", "sp_date_value"),
        ] {
            // In id order, as beside another criterion that is checked per candidate (alone, a
            // range is listed in its index's order, `a_range_alone_is_listed_in_its_index_order`).
            let mut q = query("Observation", q);
            q.sort.clear();
            let listed = search(&q, 10, How::new(Substrings::Fts5));
            assert!(listed.text.contains(&format!("INDEXED BY {index}")), "{index}: {}", listed.text);
            let Density::Probe(probe) = walk_density(&q, Substrings::Fts5, 10) else { panic!("probed") };
            assert!(probe.text.contains(&format!("INDEXED BY {index}")), "{index}: {}", probe.text);
            // Checked per candidate, by the resource's key; PostgreSQL plans for itself.
            let walked = search(&q, 10, How { walk: true, ..How::new(Substrings::Fts5) });
            assert!(walked.text.contains("INDEXED BY sqlite_autoindex_sp_"), "{}", walked.text);
            assert!(!walked.text.contains(&format!("INDEXED BY {index}")), "{}", walked.text);
            assert!(!search(&q, 10, How::new(Substrings::Like)).text.contains("INDEXED BY"));
        }
    }
}
