//! Access decisions (Z2/Z3) on the Cedar policy engine.
//!
//! The model (`data/schema.cedarschema`): principals are `Mamori::User` (whose parents are their
//! `Mamori::Role`s) or `Mamori::Client`; resources are `Mamori::Resource` with their type,
//! information classes, whether they belong to a patient's record, and whether they are a lab
//! result; the context says whether a care relationship or a break-glass grant covers the
//! patient. Cedar's own semantics give deny-by-default and forbid-overrides-permit.
//!
//! Speed, exactly (no heuristics):
//! - Slicing: a policy whose principal scope is `in Mamori::Role::"r"` can only match users
//!   holding `r`, and one whose resource scope is `== Mamori::Resource::"T/x"` only that
//!   resource; a decision evaluates only the policies that can match. Sliced sets are built once.
//! - Memoising: Cedar is a pure function of the request and entities. An entity's id can only
//!   matter if some policy names it as a literal; otherwise only its attributes (and, for a
//!   user, its roles) do. Decisions are memoised on exactly those inputs, so the thousandth
//!   Observation a doctor reads costs a hash lookup, not an evaluation.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy,
    PolicySet, PrincipalConstraint, Request, ResourceConstraint, RestrictedExpression, Schema, ValidationMode,
    Validator,
};

/// The schema every policy set is validated against.
pub const SCHEMA: &str = include_str!("../data/schema.cedarschema");
/// The shipped policies.
pub const DEFAULT_POLICIES: &str = include_str!("../data/default-policies.cedar");

/// The roles the shipped policies know, with their Japanese names.
pub const DEFAULT_ROLES: &[(&str, &str)] = &[
    ("doctor", "医師"),
    ("nurse", "看護師"),
    ("pharmacist", "薬剤師"),
    ("clerk", "事務"),
    ("security_manager", "安全管理責任者"),
    ("system_admin", "システム管理者"),
    ("maintenance_vendor", "保守事業者 (作業者)"),
    ("vendor_contact", "保守事業者窓口"),
];

/// An action (参照・追加・更新・削除・実行).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Act {
    /// 参照: read, vread, history.
    Read,
    /// 参照: search.
    Search,
    /// 追加.
    Create,
    /// 更新.
    Update,
    /// 削除.
    Delete,
    /// 実行: operations.
    Execute,
}

impl Act {
    /// All actions.
    pub const ALL: [Act; 6] = [Act::Read, Act::Search, Act::Create, Act::Update, Act::Delete, Act::Execute];

    /// The Cedar action id.
    pub fn as_str(self) -> &'static str {
        match self {
            Act::Read => "read",
            Act::Search => "search",
            Act::Create => "create",
            Act::Update => "update",
            Act::Delete => "delete",
            Act::Execute => "execute",
        }
    }

    /// Parses an action id.
    pub fn parse(s: &str) -> Option<Act> {
        Act::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A person, with their roles.
    User {
        /// Login name.
        username: String,
        /// Roles (職種).
        roles: Vec<String>,
        /// Department (業務単位), "" when none.
        department: String,
        /// Whether the account is linked to a Practitioner (care relationships need one).
        has_fhir_user: bool,
        /// The approved remote-maintenance window (保守作業の時間枠) the person works in now, if
        /// any: its scope goes into the decision context (`context.window`).
        window: Option<Arc<Window>>,
    },
    /// An application acting for itself.
    Client {
        /// `client_id`.
        id: String,
        /// Classes it may reach.
        classes: Vec<String>,
    },
}

/// The scope of an open remote-maintenance window (M1), as the policies see it in
/// `context.window`: which administrative acts, which information classes of whose records, and
/// whether they may be read or written. Outside a window a maintenance account has none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Window {
    /// The window's id (recorded in every audit entry made in it).
    pub id: String,
    /// Administrative acts (`context.operation` names, e.g. `read-audit`).
    pub acts: BTreeSet<String>,
    /// Information classes of patient data approved (none by default).
    pub classes: BTreeSet<String>,
    /// The patients (`Patient/id`) whose records those classes cover.
    pub patients: BTreeSet<String>,
    /// Whether approved patient data may be read (read, search).
    pub read: bool,
    /// Whether approved patient data may be written (create, update, delete, operations).
    pub write: bool,
}

/// What is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Resource type.
    pub resource_type: String,
    /// `Type/id`, or `None` for a type-level decision (search, or before a body is known).
    pub reference: Option<String>,
    /// Information classes.
    pub classes: BTreeSet<String>,
    /// Belongs to a patient's record.
    pub patient_bound: bool,
    /// A laboratory result.
    pub lab: bool,
}

/// The circumstances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Situation {
    /// A care relationship with the patient.
    pub care: bool,
    /// An active break-glass grant for the patient.
    pub break_glass: bool,
    /// Operation name for `execute`.
    pub operation: String,
    /// The record's patient is one the caller's maintenance window approves.
    pub window_patient: bool,
}

/// A decision and the policies behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allowed.
    pub allowed: bool,
    /// The `@id`s of the policies that determined it (permits for an allow, forbids for a deny
    /// by forbid; empty for a deny because nothing permitted).
    pub policies: Vec<String>,
    /// Evaluation errors (a policy that errors is skipped, as Cedar specifies).
    pub errors: Vec<String>,
}

/// Why a policy set is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

/// Everything a decision can depend on, with ids kept only where some policy names them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    principal: Option<String>,
    roles: Vec<String>,
    attrs: Vec<String>,
    client: bool,
    act: Act,
    resource: Option<String>,
    resource_type: String,
    classes: BTreeSet<String>,
    patient_bound: bool,
    lab: bool,
    situation: Situation,
    window: Option<Arc<Window>>,
}

const MEMO_MAX: usize = 100_000;

/// Roles held, and the resource when some policy is scoped to it.
type SliceKey = (Vec<String>, Option<String>);

/// A validated policy set, ready to decide.
pub struct PolicyEngine {
    text: String,
    all: PolicySet,
    schema: Schema,
    by_role: HashMap<String, Vec<Policy>>,
    by_resource: HashMap<String, Vec<Policy>>,
    unscoped: Vec<Policy>,
    /// `(type, id)` of every entity a policy names as a literal.
    named: HashSet<(String, String)>,
    sliced: Mutex<HashMap<SliceKey, Arc<PolicySet>>>,
    memo: Mutex<HashMap<Key, Arc<Decision>>>,
    authorizer: Authorizer,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine").field("policies", &self.all.policies().count()).finish()
    }
}

fn schema() -> Result<Schema, PolicyError> {
    Schema::from_cedarschema_str(SCHEMA)
        .map(|(s, _)| s)
        .map_err(|e| PolicyError(format!("the built-in schema does not parse: {e}")))
}

fn uid(ty: &str, id: &str) -> Result<EntityUid, PolicyError> {
    let t = EntityTypeName::from_str(ty).map_err(|e| PolicyError(e.to_string()))?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

fn strings<'a>(it: impl IntoIterator<Item = &'a String>) -> RestrictedExpression {
    RestrictedExpression::new_set(it.into_iter().map(|s| RestrictedExpression::new_string(s.clone())))
}

impl PolicyEngine {
    /// Parses `text`, checks it against the schema (strict mode) and that every policy has an
    /// `@id` annotation (explanations name policies by it), and prepares it.
    pub fn new(text: &str) -> Result<PolicyEngine, PolicyError> {
        let all = PolicySet::from_str(text).map_err(|e| PolicyError(format!("policies do not parse: {e}")))?;
        let schema = schema()?;
        let result = Validator::new(schema.clone()).validate(&all, ValidationMode::Strict);
        if !result.validation_passed() {
            let errs: Vec<String> = result.validation_errors().map(|e| e.to_string()).collect();
            return Err(PolicyError(format!("policies do not match the schema: {}", errs.join("; "))));
        }
        let mut ids = HashSet::new();
        let mut by_role: HashMap<String, Vec<Policy>> = HashMap::new();
        let mut by_resource: HashMap<String, Vec<Policy>> = HashMap::new();
        let mut unscoped = Vec::new();
        let mut named = HashSet::new();
        for p in all.policies() {
            let Some(id) = p.annotation("id") else {
                return Err(PolicyError(format!("policy `{}` needs an @id(\"…\") annotation", p.id())));
            };
            if !ids.insert(id.to_string()) {
                return Err(PolicyError(format!("two policies have @id(\"{id}\")")));
            }
            named.extend(
                p.entity_literals().into_iter().map(|u| (u.type_name().to_string(), u.id().unescaped().to_string())),
            );
            match (p.principal_constraint(), p.resource_constraint()) {
                (PrincipalConstraint::In(u), _) if u.type_name().to_string() == "Mamori::Role" => {
                    by_role.entry(u.id().unescaped().to_string()).or_default().push(p.clone())
                }
                (_, ResourceConstraint::Eq(u)) if u.type_name().to_string() == "Mamori::Resource" => {
                    by_resource.entry(u.id().unescaped().to_string()).or_default().push(p.clone())
                }
                _ => unscoped.push(p.clone()),
            }
        }
        Ok(PolicyEngine {
            text: text.to_string(),
            all,
            schema,
            by_role,
            by_resource,
            unscoped,
            named,
            sliced: Mutex::new(HashMap::new()),
            memo: Mutex::new(HashMap::new()),
            authorizer: Authorizer::new(),
        })
    }

    /// The shipped policies.
    pub fn default_policies() -> Result<PolicyEngine, PolicyError> {
        PolicyEngine::new(DEFAULT_POLICIES)
    }

    /// The policy text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Number of policies.
    pub fn len(&self) -> usize {
        self.all.policies().count()
    }

    /// Whether there are no policies (everything is denied).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The roles some policy names.
    pub fn roles(&self) -> BTreeSet<String> {
        self.by_role.keys().cloned().collect()
    }

    fn slice(&self, roles: &[String], resource: Option<&str>) -> Result<Arc<PolicySet>, PolicyError> {
        let mut roles: Vec<String> = roles.iter().filter(|r| self.by_role.contains_key(*r)).cloned().collect();
        roles.sort();
        roles.dedup();
        let key = (roles, resource.filter(|r| self.by_resource.contains_key(*r)).map(str::to_string));
        let mut cache = self.sliced.lock().map_err(|_| PolicyError("policy cache poisoned".into()))?;
        if let Some(s) = cache.get(&key) {
            return Ok(s.clone());
        }
        let mut set = PolicySet::new();
        let chosen = self
            .unscoped
            .iter()
            .chain(key.0.iter().filter_map(|r| self.by_role.get(r)).flatten())
            .chain(key.1.iter().filter_map(|r| self.by_resource.get(r)).flatten());
        for p in chosen {
            set.add(p.clone()).map_err(|e| PolicyError(e.to_string()))?;
        }
        let set = Arc::new(set);
        if cache.len() < 4096 {
            cache.insert(key, set.clone());
        }
        Ok(set)
    }

    fn request(
        &self,
        subject: &Subject,
        act: Act,
        target: &Target,
        situation: &Situation,
    ) -> Result<(Request, Entities), PolicyError> {
        let mut entities = Vec::with_capacity(4);
        let principal = match subject {
            Subject::User { username, roles, department, has_fhir_user, .. } => {
                let me = uid("Mamori::User", username)?;
                let mut parents = HashSet::new();
                for r in roles {
                    let ru = uid("Mamori::Role", r)?;
                    entities.push(Entity::new_no_attrs(ru.clone(), HashSet::new()));
                    parents.insert(ru);
                }
                let attrs = HashMap::from([
                    ("department".to_string(), RestrictedExpression::new_string(department.clone())),
                    ("hasFhirUser".to_string(), RestrictedExpression::new_bool(*has_fhir_user)),
                ]);
                entities.push(Entity::new(me.clone(), attrs, parents).map_err(|e| PolicyError(e.to_string()))?);
                me
            }
            Subject::Client { id, classes } => {
                let me = uid("Mamori::Client", id)?;
                let attrs = HashMap::from([("classes".to_string(), strings(classes))]);
                entities.push(Entity::new(me.clone(), attrs, HashSet::new()).map_err(|e| PolicyError(e.to_string()))?);
                me
            }
        };
        let rid = target.reference.clone().unwrap_or_else(|| target.resource_type.clone());
        let resource = uid("Mamori::Resource", &rid)?;
        let attrs = HashMap::from([
            ("type".to_string(), RestrictedExpression::new_string(target.resource_type.clone())),
            ("classes".to_string(), strings(&target.classes)),
            ("patientBound".to_string(), RestrictedExpression::new_bool(target.patient_bound)),
            ("lab".to_string(), RestrictedExpression::new_bool(target.lab)),
        ]);
        entities.push(Entity::new(resource.clone(), attrs, HashSet::new()).map_err(|e| PolicyError(e.to_string()))?);
        let window = match subject {
            Subject::User { window: Some(w), .. } => Some(w.as_ref()),
            _ => None,
        };
        let none = Window::default();
        let w = window.unwrap_or(&none);
        let window = RestrictedExpression::new_record([
            ("open".to_string(), RestrictedExpression::new_bool(window.is_some())),
            ("id".to_string(), RestrictedExpression::new_string(w.id.clone())),
            ("acts".to_string(), strings(&w.acts)),
            ("classes".to_string(), strings(&w.classes)),
            ("patient".to_string(), RestrictedExpression::new_bool(window.is_some() && situation.window_patient)),
            ("read".to_string(), RestrictedExpression::new_bool(w.read)),
            ("write".to_string(), RestrictedExpression::new_bool(w.write)),
        ])
        .map_err(|e| PolicyError(e.to_string()))?;
        let context = Context::from_pairs([
            ("care".to_string(), RestrictedExpression::new_bool(situation.care)),
            ("breakGlass".to_string(), RestrictedExpression::new_bool(situation.break_glass)),
            ("operation".to_string(), RestrictedExpression::new_string(situation.operation.clone())),
            ("window".to_string(), window),
        ])
        .map_err(|e| PolicyError(e.to_string()))?;
        let action = uid("Mamori::Action", act.as_str())?;
        let request =
            Request::new(principal, action, resource, context, None).map_err(|e| PolicyError(e.to_string()))?;
        let entities = Entities::from_entities(entities, None).map_err(|e| PolicyError(e.to_string()))?;
        Ok((request, entities))
    }

    fn run(&self, set: &PolicySet, subject: &Subject, act: Act, target: &Target, situation: &Situation) -> Decision {
        let (request, entities) = match self.request(subject, act, target, situation) {
            Ok(x) => x,
            Err(e) => return Decision { allowed: false, policies: Vec::new(), errors: vec![e.0] },
        };
        let response = self.authorizer.is_authorized(&request, set, &entities);
        let mut policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| set.annotation(id, "id").map_or_else(|| id.to_string(), str::to_string))
            .collect();
        policies.sort();
        Decision {
            allowed: response.decision() == CedarDecision::Allow,
            policies,
            errors: response.diagnostics().errors().map(|e| e.to_string()).collect(),
        }
    }

    fn names(&self, ty: &str, id: &str) -> bool {
        !self.named.is_empty() && self.named.contains(&(ty.to_string(), id.to_string()))
    }

    fn key(&self, subject: &Subject, act: Act, target: &Target, situation: &Situation) -> Result<Key, PolicyError> {
        let (principal, roles, attrs, client, window) = match subject {
            Subject::User { username, roles, department, has_fhir_user, window } => {
                let named = self.names("Mamori::User", username);
                let mut roles = roles.clone();
                roles.sort();
                roles.dedup();
                let attrs = vec![department.clone(), has_fhir_user.to_string()];
                (named.then(|| username.clone()), roles, attrs, false, window.clone())
            }
            Subject::Client { id, classes } => {
                let named = self.names("Mamori::Client", id);
                let mut classes = classes.clone();
                classes.sort();
                classes.dedup();
                (named.then(|| id.clone()), Vec::new(), classes, true, None)
            }
        };
        let rid = target.reference.as_deref().unwrap_or(&target.resource_type);
        let resource = self.names("Mamori::Resource", rid).then(|| rid.to_string());
        Ok(Key {
            principal,
            roles,
            attrs,
            client,
            act,
            resource,
            resource_type: target.resource_type.clone(),
            classes: target.classes.clone(),
            patient_bound: target.patient_bound,
            lab: target.lab,
            situation: situation.clone(),
            window,
        })
    }

    /// Decides one request. Deny on any internal failure.
    pub fn decide(&self, subject: &Subject, act: Act, target: &Target, situation: &Situation) -> Arc<Decision> {
        let key = match self.key(subject, act, target, situation) {
            Ok(k) => k,
            Err(e) => return Arc::new(Decision { allowed: false, policies: Vec::new(), errors: vec![e.0] }),
        };
        if let Some(d) = self.memo.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return d;
        }
        let roles: &[String] = match subject {
            Subject::User { roles, .. } => roles,
            Subject::Client { .. } => &[],
        };
        let rid = target.reference.as_deref().unwrap_or(&target.resource_type);
        let d = match self.slice(roles, Some(rid)) {
            Ok(set) => Arc::new(self.run(&set, subject, act, target, situation)),
            Err(e) => return Arc::new(Decision { allowed: false, policies: Vec::new(), errors: vec![e.0] }),
        };
        if let Ok(mut m) = self.memo.lock() {
            if m.len() >= MEMO_MAX {
                m.clear();
            }
            m.insert(key, d.clone());
        }
        d
    }

    /// Decides by evaluating the sliced policies, bypassing the memo (for benchmarks and checks).
    pub fn decide_uncached(&self, subject: &Subject, act: Act, target: &Target, situation: &Situation) -> Decision {
        let roles: &[String] = match subject {
            Subject::User { roles, .. } => roles,
            Subject::Client { .. } => &[],
        };
        let rid = target.reference.as_deref().unwrap_or(&target.resource_type);
        match self.slice(roles, Some(rid)) {
            Ok(set) => self.run(&set, subject, act, target, situation),
            Err(e) => Decision { allowed: false, policies: Vec::new(), errors: vec![e.0] },
        }
    }

    /// Decides against every policy, without slicing (for explanations and to cross-check).
    pub fn decide_unsliced(&self, subject: &Subject, act: Act, target: &Target, situation: &Situation) -> Decision {
        self.run(&self.all, subject, act, target, situation)
    }

    /// Checks the schema parses (for start-up).
    pub fn schema_ok() -> Result<(), PolicyError> {
        schema().map(|_| ())
    }

    /// The schema in use.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(roles: &[&str]) -> Subject {
        Subject::User {
            username: "u1".into(),
            roles: roles.iter().map(|s| (*s).to_string()).collect(),
            department: String::new(),
            has_fhir_user: true,
            window: None,
        }
    }

    fn target(rt: &str, classes: &[&str], patient_bound: bool) -> Target {
        Target {
            resource_type: rt.into(),
            reference: Some(format!("{rt}/1")),
            classes: classes.iter().map(|s| (*s).to_string()).collect(),
            patient_bound,
            lab: false,
        }
    }

    #[test]
    fn shipped_policies_validate_and_decide() {
        let e = PolicyEngine::default_policies().unwrap_or_else(|e| unreachable!("{e}"));
        let care = Situation { care: true, ..Situation::default() };
        let none = Situation::default();
        let obs = target("Observation", &["general"], true);
        assert!(e.decide(&user(&["doctor"]), Act::Read, &obs, &care).allowed);
        assert!(!e.decide(&user(&["doctor"]), Act::Read, &obs, &none).allowed);
        assert!(!e.decide(&user(&["doctor"]), Act::Delete, &obs, &care).allowed);
        let hiv = target("Observation", &["general", "hiv"], true);
        assert!(!e.decide(&user(&["nurse"]), Act::Read, &hiv, &care).allowed);
        assert!(e.decide(&user(&["clerk"]), Act::Read, &target("Patient", &["administrative"], true), &none).allowed);
        assert!(!e.decide(&user(&["clerk"]), Act::Read, &obs, &care).allowed);
        // Deny overrides allow.
        let d = e.decide(&user(&["doctor", "maintenance_vendor"]), Act::Read, &obs, &care);
        assert!(!d.allowed);
        assert_eq!(d.policies, vec!["maintenance-vendor-outside-window"]);
        let d = e.decide(&user(&["doctor"]), Act::Read, &obs, &care);
        assert_eq!(d.policies, vec!["doctor-clinical"]);
    }

    fn vendor(window: Option<Window>) -> Subject {
        Subject::User {
            username: "v1".into(),
            roles: vec!["maintenance_vendor".into()],
            department: String::new(),
            has_fhir_user: false,
            window: window.map(Arc::new),
        }
    }

    /// A maintenance account: nothing outside a window; inside, exactly its scope — the acts
    /// it names, the classes of the patients it names, read or written as approved — and
    /// another role held beside it adds nothing.
    #[test]
    fn a_maintenance_window_is_the_vendors_whole_right() {
        let e = PolicyEngine::default_policies().unwrap_or_else(|e| unreachable!("{e}"));
        let act = |op: &str| Situation { operation: op.into(), ..Situation::default() };
        let system = Target {
            resource_type: "Mamori".into(),
            reference: None,
            classes: ["system".to_string()].into(),
            patient_bound: false,
            lab: false,
        };
        assert!(!e.decide(&vendor(None), Act::Execute, &system, &act("read-audit")).allowed);
        let w = Window {
            id: "w1".into(),
            acts: ["read-audit".to_string()].into(),
            classes: ["general".to_string()].into(),
            patients: ["Patient/p1".to_string()].into(),
            read: true,
            write: false,
        };
        assert!(e.decide(&vendor(Some(w.clone())), Act::Execute, &system, &act("read-audit")).allowed);
        let d = e.decide(&vendor(Some(w.clone())), Act::Execute, &system, &act("manage-users"));
        assert!(!d.allowed);
        assert_eq!(d.policies, vec!["maintenance-window-scope"]);
        let obs = target("Observation", &["general"], true);
        let theirs = Situation { window_patient: true, ..Situation::default() };
        let other = Situation::default();
        assert!(e.decide(&vendor(Some(w.clone())), Act::Read, &obs, &theirs).allowed);
        assert!(!e.decide(&vendor(Some(w.clone())), Act::Read, &obs, &other).allowed, "another patient");
        assert!(!e.decide(&vendor(Some(w.clone())), Act::Update, &obs, &theirs).allowed, "read only");
        let hiv = target("Observation", &["general", "hiv"], true);
        assert!(!e.decide(&vendor(Some(w.clone())), Act::Read, &hiv, &theirs).allowed, "a class not approved");
        // The type-level decision of a search: the type's classes, no patient.
        let search = Target { reference: None, patient_bound: false, ..obs.clone() };
        assert!(e.decide(&vendor(Some(w.clone())), Act::Search, &search, &other).allowed);
        let write = Window { write: true, ..w.clone() };
        assert!(e.decide(&vendor(Some(write)), Act::Update, &obs, &theirs).allowed);
        // A doctor's role beside the vendor's adds nothing beyond the window.
        let mut both = vendor(Some(w.clone()));
        if let Subject::User { roles, .. } = &mut both {
            roles.push("doctor".into());
        }
        let care = Situation { care: true, ..Situation::default() };
        assert!(!e.decide(&both, Act::Read, &obs, &care).allowed, "the doctor's right for another patient");
        // The window is part of the memo key: the same request outside the window is refused.
        assert!(!e.decide(&vendor(None), Act::Read, &obs, &theirs).allowed);
        assert!(!e.decide(&vendor(None), Act::Search, &search, &other).allowed);
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(PolicyEngine::new("permit(principal, action, resource)").is_err(), "no @id");
        assert!(
            PolicyEngine::new("@id(\"x\") permit(principal, action, resource) when { resource.clases.isEmpty() };")
                .is_err()
        );
        assert!(PolicyEngine::new("@id(\"x\") permit(principal, action, resource").is_err());
        assert!(
            PolicyEngine::new(
                "@id(\"x\") permit(principal, action, resource);\n@id(\"x\") forbid(principal, action, resource);"
            )
            .is_err()
        );
        let empty = PolicyEngine::new("").unwrap_or_else(|e| unreachable!("{e}"));
        assert!(
            !empty
                .decide(
                    &user(&["doctor"]),
                    Act::Read,
                    &target("Observation", &["general"], false),
                    &Situation::default()
                )
                .allowed
        );
    }
}

#[cfg(test)]
mod combination {
    //! Properties of how decisions combine, over arbitrary roles, classes and circumstances.
    use proptest::prelude::*;

    use super::*;

    const ROLES: &[&str] =
        &["doctor", "nurse", "pharmacist", "clerk", "security_manager", "system_admin", "maintenance_vendor", "other"];
    const CLASSES: &[&str] =
        &["general", "administrative", "infectious", "genetic", "mental", "hiv", "reproductive", "audit", "system"];
    const TYPES: &[&str] =
        &["Observation", "Patient", "MedicationDispense", "Condition", "AuditEvent", "CapabilityStatement"];

    fn engine() -> &'static PolicyEngine {
        static E: std::sync::OnceLock<PolicyEngine> = std::sync::OnceLock::new();
        E.get_or_init(|| PolicyEngine::default_policies().unwrap_or_else(|e| unreachable!("{e}")))
    }

    fn pick(all: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
        proptest::sample::subsequence(all.to_vec(), 0..=all.len())
            .prop_map(|v| v.into_iter().map(str::to_string).collect())
    }

    prop_compose! {
        fn case()(roles in pick(ROLES), classes in pick(CLASSES).prop_filter("a record has a class", |c| !c.is_empty()),
                  t in proptest::sample::select(TYPES), act in proptest::sample::select(&Act::ALL[..5]),
                  bound: bool, lab: bool, care: bool, bg: bool)
            -> (Vec<String>, BTreeSet<String>, String, Act, bool, bool, bool, bool) {
            (roles, classes.into_iter().collect(), t.to_string(), act, bound, lab, care, bg)
        }
    }

    fn user(roles: &[String]) -> Subject {
        Subject::User {
            username: "p".into(),
            roles: roles.to_vec(),
            department: String::new(),
            has_fhir_user: true,
            window: None,
        }
    }

    fn target(t: &str, classes: &BTreeSet<String>, bound: bool, lab: bool) -> Target {
        Target {
            resource_type: t.into(),
            reference: Some(format!("{t}/x")),
            classes: classes.clone(),
            patient_bound: bound,
            lab,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Memoised, sliced decisions equal a full evaluation of every policy.
        #[test]
        fn fast_path_equals_full_evaluation((roles, classes, t, act, bound, lab, care, bg) in case()) {
            let s = Situation { care, break_glass: bg, ..Situation::default() };
            let tg = target(&t, &classes, bound, lab);
            let fast = engine().decide(&user(&roles), act, &tg, &s);
            prop_assert_eq!(fast.allowed, engine().decide_unsliced(&user(&roles), act, &tg, &s).allowed);
        }

        /// Deny overrides allow: a maintenance-vendor role denies everything, whatever else is held.
        #[test]
        fn forbid_overrides((mut roles, classes, t, act, bound, lab, care, bg) in case()) {
            roles.push("maintenance_vendor".into());
            let s = Situation { care, break_glass: bg, ..Situation::default() };
            prop_assert!(!engine().decide(&user(&roles), act, &target(&t, &classes, bound, lab), &s).allowed);
        }

        /// Adding a class label only narrows: allowed with classes C ⇒ allowed with any non-empty subset.
        #[test]
        fn labels_only_narrow((roles, classes, t, act, bound, lab, care, bg) in case(), drop in 0usize..9) {
            let s = Situation { care, break_glass: bg, ..Situation::default() };
            let full = engine().decide(&user(&roles), act, &target(&t, &classes, bound, lab), &s).allowed;
            let mut fewer = classes.clone();
            if let Some(c) = classes.iter().nth(drop % classes.len()) { fewer.remove(c); }
            if full && !fewer.is_empty() {
                prop_assert!(engine().decide(&user(&roles), act, &target(&t, &fewer, bound, lab), &s).allowed);
            }
        }

        /// More roles never take rights away (unless a forbidding role is added); care and
        /// break-glass never take rights away; no rights without any role.
        #[test]
        fn monotonic((roles, classes, t, act, bound, lab, care, bg) in case(), extra in proptest::sample::select(&ROLES[..6])) {
            let s = Situation { care, break_glass: bg, ..Situation::default() };
            let tg = target(&t, &classes, bound, lab);
            let base = engine().decide(&user(&roles), act, &tg, &s).allowed;
            let mut more = roles.clone();
            more.push(extra.to_string());
            if base { prop_assert!(engine().decide(&user(&more), act, &tg, &s).allowed); }
            let with_care = Situation { care: true, ..s.clone() };
            if base { prop_assert!(engine().decide(&user(&roles), act, &tg, &with_care).allowed); }
            let with_bg = Situation { break_glass: true, ..s.clone() };
            if base { prop_assert!(engine().decide(&user(&roles), act, &tg, &with_bg).allowed); }
            prop_assert!(!engine().decide(&user(&[]), act, &tg, &s).allowed);
        }

        /// Without care or break-glass, no patient-bound clinical record is reachable except by
        /// the clerk's administrative right.
        #[test]
        fn care_is_required((roles, classes, t, act, lab, ..) in case()) {
            let s = Situation::default();
            let d = engine().decide(&user(&roles), act, &target(&t, &classes, true, lab), &s);
            if d.allowed {
                prop_assert!(
                    classes.iter().all(|c| c == "administrative") || classes.iter().all(|c| c == "audit" || c == "system"),
                    "allowed without care: {:?} {:?}", roles, classes
                );
            }
        }
    }
}
