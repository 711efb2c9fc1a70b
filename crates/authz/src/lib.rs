//! Information classes (情報区分, Z1) and access decisions (Z2/Z3).
//!
//! - [`classes`]: the taxonomy, and the rules that label every stored resource with its classes
//!   in `meta.security` (code system `urn:mamori:information-class`).
//! - [`policy`]: decisions on the Cedar policy engine — roles × classes × actions, the care
//!   relationship and break-glass. A resource is revealed only to a principal allowed *every*
//!   class it carries, so an added label can only narrow who sees it.

pub mod classes;
pub mod policy;

pub use classes::{ClassDef, Rules, SYSTEM, classify, default_rules, taxonomy};
pub use policy::{
    Act, DEFAULT_POLICIES, DEFAULT_ROLES, Decision, PolicyEngine, PolicyError, Situation, Subject, Target, Window,
};
