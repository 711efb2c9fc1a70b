//! Information classes (情報区分, Z1): the taxonomy, and the rules that label every stored
//! resource with its classes in `meta.security` (code system `urn:mamori:information-class`).
//!
//! Semantics for access decisions (issue #5): a resource is revealed only to a principal allowed
//! *every* class it carries, so an added label can only narrow who sees it.

pub mod classes;

pub use classes::{ClassDef, Rules, SYSTEM, classify, default_rules, taxonomy};
