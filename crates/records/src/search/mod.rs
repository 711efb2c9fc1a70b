//! FHIR search, driven by the official R4 SearchParameter definitions.
//!
//! - [`path`] compiles the subset of FHIRPath the R4 definitions use and evaluates it on a
//!   resource, with the structure definitions telling it each element's type.
//! - [`extract`] turns a resource into index rows ([`SearchRow`]), written by the store in the
//!   same transaction as the version (see `docs/SEARCH.md`).
//! - [`parse`] turns a query string into a [`SearchRequest`]: criteria, result parameters and
//!   the parameters it could not use.
//! - [`sql`] turns criteria into one SQL statement over the index tables, shared by the stores.

pub mod extract;
pub mod normalize;
pub mod parse;
pub mod path;
pub mod run;
pub mod sql;
pub mod subset;

pub use extract::rows_for;
pub use parse::{Include, SearchRequest, Summary, TotalMode, encode_cursor, parse_search};
pub use run::SearchPage;

/// One indexed value of one search parameter of a resource.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    /// string: normalised form (case, accents, width, kana folded; spaces removed) and the
    /// value as written.
    Str {
        /// For default and `:contains` matching.
        norm: String,
        /// For `:exact`.
        exact: String,
    },
    /// token (and uri, with an empty system): `system|code`, and display text for `:text`.
    Token {
        /// `""` when there is none.
        system: String,
        /// The code, value or uri.
        code: String,
        /// Normalised display or text.
        text: String,
    },
    /// date: the closed range the value covers, in microseconds since the epoch (UTC).
    Date {
        /// First microsecond.
        lo: i64,
        /// Last microsecond.
        hi: i64,
    },
    /// number and quantity: the closed range (a point, or a Range), with unit for quantities.
    Number {
        /// Low end.
        lo: f64,
        /// High end.
        hi: f64,
        /// Quantity unit system (`""` for plain numbers).
        system: String,
        /// Quantity code, or the unit when there is no code.
        code: String,
    },
    /// reference: a local `Type/id` target and/or an absolute or canonical URL.
    Ref {
        /// Target type (`""` when not local).
        ty: String,
        /// Target id (`""` when not local).
        id: String,
        /// The reference as written when it is not a relative `Type/id`.
        url: String,
    },
    /// composite of a token and a second value (the shapes R4 defines).
    Composite {
        /// First component's system.
        system: String,
        /// First component's code.
        code: String,
        /// Second component.
        second: Box<IndexValue>,
    },
}

/// One row of the search index.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRow {
    /// Parameter code (`name`, `patient`, `_lastUpdated`…).
    pub param: String,
    /// The value.
    pub value: IndexValue,
}

/// Which index table a parameter's rows live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `sp_string`
    Str,
    /// `sp_token`
    Token,
    /// `sp_date`
    Date,
    /// `sp_number`
    Number,
    /// `sp_ref`
    Ref,
    /// `sp_composite`
    Composite,
}

impl Table {
    /// The SQL table name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Str => "sp_string",
            Table::Token => "sp_token",
            Table::Date => "sp_date",
            Table::Number => "sp_number",
            Table::Ref => "sp_ref",
            Table::Composite => "sp_composite",
        }
    }

    /// The table's value index: type, parameter and the value's leading columns, then the
    /// resource key (`crates/store-sql/src/schema.rs`).
    pub fn value_index(self) -> &'static str {
        match self {
            Table::Str => "sp_string_value",
            Table::Token => "sp_token_value",
            Table::Date => "sp_date_value",
            Table::Number => "sp_number_value",
            Table::Ref => "sp_ref_value",
            Table::Composite => "sp_composite_value",
        }
    }

    /// The index a search for values above a point seeks (`hi`: the date and number tables;
    /// the value index elsewhere).
    pub fn high_index(self) -> &'static str {
        match self {
            Table::Date => "sp_date_high",
            Table::Number => "sp_number_high",
            t => t.value_index(),
        }
    }

    /// SQLite's name for the table's owner key (`type, id, param, …`: its primary key; the
    /// composite table, which has none, its owner index), which checks one resource's rows.
    pub fn owner_index(self) -> &'static str {
        match self {
            Table::Str => "sqlite_autoindex_sp_string_1",
            Table::Token => "sqlite_autoindex_sp_token_1",
            Table::Date => "sqlite_autoindex_sp_date_1",
            Table::Number => "sqlite_autoindex_sp_number_1",
            Table::Ref => "sqlite_autoindex_sp_ref_1",
            Table::Composite => "sp_composite_owner",
        }
    }

    /// The table of a value.
    pub fn of(v: &IndexValue) -> Table {
        match v {
            IndexValue::Str { .. } => Table::Str,
            IndexValue::Token { .. } => Table::Token,
            IndexValue::Date { .. } => Table::Date,
            IndexValue::Number { .. } => Table::Number,
            IndexValue::Ref { .. } => Table::Ref,
            IndexValue::Composite { .. } => Table::Composite,
        }
    }
}

/// A comparison prefix of date, number and quantity searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// eq (default)
    Eq,
    /// ne
    Ne,
    /// lt
    Lt,
    /// le
    Le,
    /// gt
    Gt,
    /// ge
    Ge,
    /// sa (starts after)
    Sa,
    /// eb (ends before)
    Eb,
    /// ap (approximately)
    Ap,
}

/// How a string value matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrMode {
    /// Starts with, ignoring case, accents, width and kana kind (default).
    Prefix,
    /// Exactly as written (`:exact`).
    Exact,
    /// Anywhere (`:contains`).
    Contains,
}

/// One value predicate on an index row.
#[derive(Debug, Clone, PartialEq)]
pub enum Pred {
    /// string
    Str(StrMode, String),
    /// token `[system|]code`: `None` system = any; `Some("")` = none; `None` code = any code of
    /// that system.
    Token {
        /// System.
        system: Option<String>,
        /// Code.
        code: Option<String>,
    },
    /// token `:text`: display or text starts with (normalised).
    TokenText(String),
    /// uri `:below`: starts with.
    UriBelow(String),
    /// uri `:above`: is a prefix of.
    UriAbove(String),
    /// date with its precision range `[lo, hi]`; `margin` widens `ap`.
    Date {
        /// Prefix.
        prefix: Prefix,
        /// First microsecond of the value's precision.
        lo: i64,
        /// Last microsecond.
        hi: i64,
        /// For `ap`: how far either side counts as approximately.
        margin: i64,
    },
    /// number or quantity with its precision range.
    Number {
        /// Prefix.
        prefix: Prefix,
        /// The value.
        value: f64,
        /// Low end of its implicit precision.
        lo: f64,
        /// High end.
        hi: f64,
        /// Quantity system (`None` = any).
        system: Option<String>,
        /// Quantity code or unit (`None` = any).
        code: Option<String>,
    },
    /// A local reference: `ty` `None` = any type.
    Ref {
        /// Target type.
        ty: Option<String>,
        /// Target id.
        id: String,
    },
    /// An absolute or canonical reference.
    RefUrl(String),
    /// A reference whose target matches a criterion on its type (chaining, one level): one
    /// criterion per target type the chain may follow.
    Chain(Vec<(String, Criterion)>),
    /// composite: first component token, second any predicate.
    Composite {
        /// First component.
        system: Option<String>,
        /// First component.
        code: String,
        /// Second component.
        second: Box<Pred>,
    },
}

/// One search criterion; criteria are ANDed, a criterion's values ORed.
#[derive(Debug, Clone, PartialEq)]
pub enum Criterion {
    /// `_id`
    Id(Vec<String>),
    /// `_lastUpdated` (date predicates on the version's own time).
    LastUpdated(Vec<Pred>),
    /// Rows of `param` in `table` matching any of `any`; `negate` (`:not`) = resources with no
    /// such row.
    Match {
        /// Parameter code.
        param: String,
        /// Table.
        table: Table,
        /// Predicates, ORed.
        any: Vec<Pred>,
        /// `:not`.
        negate: bool,
    },
    /// `:missing=true|false`.
    Missing {
        /// Parameter code.
        param: String,
        /// Table.
        table: Table,
        /// `true` = resources without any value.
        missing: bool,
    },
    /// `_has:Type:param:criterion`: resources referred to by a `source` resource through `param`
    /// whose own criterion matches.
    Has {
        /// The referring type.
        source: String,
        /// Its reference parameter.
        param: String,
        /// Criterion on the referring resource.
        inner: Box<Criterion>,
    },
}

/// One sort key.
#[derive(Debug, Clone, PartialEq)]
pub enum SortKey {
    /// `_id`
    Id,
    /// `_lastUpdated`
    LastUpdated,
    /// Another parameter: the least (ascending) or greatest (descending) of its values.
    Param {
        /// Code.
        param: String,
        /// Table.
        table: Table,
    },
    /// The default order of a search driven by a string prefix (`Patient?name=山田`): the least
    /// of the resource's values that match it, then the id. Never asked for by `_sort`; chosen
    /// when `_sort` is absent so that the value index answers in order and the statement stops
    /// after one page instead of gathering every match (`sql::value_ordered`).
    Matched,
}

/// A sort value as stored, for keyset paging.
#[derive(Debug, Clone, PartialEq)]
pub enum SortVal {
    /// Integer.
    Int(i64),
    /// Real.
    Real(f64),
    /// Text.
    Text(String),
}

/// Where a page starts: after (or, going back, before) the row with these sort values and id.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// Per sort key: whether the value was missing, and the value.
    pub keys: Vec<(bool, SortVal)>,
    /// The row's id.
    pub id: String,
    /// Page backwards (the `previous` link).
    pub backwards: bool,
}

/// A store-level search: criteria, order and where to start.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    /// Type searched.
    pub resource_type: String,
    /// ANDed criteria.
    pub criteria: Vec<Criterion>,
    /// Sort keys with descending flags (the id always breaks ties, ascending).
    pub sort: Vec<(SortKey, bool)>,
    /// Start.
    pub cursor: Option<Cursor>,
}

/// One matching resource, with its sort values for the next cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Id.
    pub id: String,
    /// Per sort key: missing flag and value.
    pub keys: Vec<(bool, SortVal)>,
}
