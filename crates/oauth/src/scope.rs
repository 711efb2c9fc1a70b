//! SMART App Launch scopes, v2 (`patient/Observation.rs`) and v1 (`patient/Observation.read`),
//! parsed into one model.

use std::fmt;

/// Whose data a scope is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Context {
    /// `patient/`: the patient in context.
    Patient,
    /// `user/`: whatever the user may see.
    User,
    /// `system/`: a backend service.
    System,
}

/// One permission letter of SMART v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Perm {
    /// c
    Create,
    /// r
    Read,
    /// u
    Update,
    /// d
    Delete,
    /// s
    Search,
}

const ORDER: [(Perm, char); 5] =
    [(Perm::Create, 'c'), (Perm::Read, 'r'), (Perm::Update, 'u'), (Perm::Delete, 'd'), (Perm::Search, 's')];

/// A resource scope such as `system/Patient.cruds`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// Context.
    pub context: Context,
    /// Resource type, `None` for `*`.
    pub resource: Option<String>,
    /// Granted permissions (bit set in `ORDER`).
    perms: u8,
}

fn bit(p: Perm) -> u8 {
    match p {
        Perm::Create => 1,
        Perm::Read => 2,
        Perm::Update => 4,
        Perm::Delete => 8,
        Perm::Search => 16,
    }
}

impl Scope {
    /// Parses one scope.
    pub fn parse(s: &str) -> Result<Scope, String> {
        let bad = || format!("`{}` is not a SMART resource scope", s.chars().take(80).collect::<String>());
        let (ctx, rest) = s.split_once('/').ok_or_else(bad)?;
        let context = match ctx {
            "patient" => Context::Patient,
            "user" => Context::User,
            "system" => Context::System,
            _ => return Err(bad()),
        };
        let (res, perm) = rest.split_once('.').ok_or_else(bad)?;
        let resource = match res {
            "*" => None,
            r if !r.is_empty()
                && r.bytes().all(|b| b.is_ascii_alphabetic())
                && r.starts_with(|c: char| c.is_ascii_uppercase()) =>
            {
                Some(r.to_string())
            }
            _ => return Err(bad()),
        };
        // SMART v2 allows `?query` restrictions on a scope; they are not supported yet, so
        // refuse rather than silently widen the grant.
        let perms = match perm {
            "read" => bit(Perm::Read) | bit(Perm::Search),
            "write" => bit(Perm::Create) | bit(Perm::Update) | bit(Perm::Delete),
            "*" => 31,
            letters => {
                let mut bits = 0u8;
                let mut last = 0usize;
                for ch in letters.chars() {
                    let pos = ORDER.iter().position(|(_, c)| *c == ch).ok_or_else(bad)?;
                    // v2 requires the letters in c r u d s order, each at most once.
                    if bits != 0 && pos <= last {
                        return Err(bad());
                    }
                    last = pos;
                    bits |= ORDER.get(pos).map_or(0, |(p, _)| bit(*p));
                }
                if bits == 0 {
                    return Err(bad());
                }
                bits
            }
        };
        Ok(Scope { context, resource, perms })
    }

    /// Whether this scope grants `perm` on `resource_type`.
    pub fn allows(&self, resource_type: &str, perm: Perm) -> bool {
        self.perms & bit(perm) != 0 && self.resource.as_deref().is_none_or(|r| r == resource_type)
    }

    /// Whether everything `other` grants is granted by `self`.
    pub fn covers(&self, other: &Scope) -> bool {
        self.context == other.context
            && (self.resource.is_none() || self.resource == other.resource)
            && (other.perms & !self.perms) == 0
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ctx = match self.context {
            Context::Patient => "patient",
            Context::User => "user",
            Context::System => "system",
        };
        let letters: String = ORDER.iter().filter(|(p, _)| self.perms & bit(*p) != 0).map(|(_, c)| *c).collect();
        write!(f, "{ctx}/{}.{letters}", self.resource.as_deref().unwrap_or("*"))
    }
}

/// A scope that grants no resource access but asks for an identity claim, a launch context or
/// a kind of refresh token (SMART App Launch 2.x, OpenID Connect Core).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Special {
    /// `openid`: an ID token.
    OpenId,
    /// `fhirUser`: the `fhirUser` claim in the ID token.
    FhirUser,
    /// `profile`: the person's display name in the ID token.
    Profile,
    /// `launch/patient`: a patient chosen at authorization (standalone launch, patient picker).
    LaunchPatient,
    /// `offline_access`: a refresh token that outlives the sign-in.
    OfflineAccess,
    /// `online_access`: a refresh token bounded by the sign-in's lifetime.
    OnlineAccess,
}

impl Special {
    /// Every special scope, in display order.
    pub const ALL: [Special; 6] = [
        Special::OpenId,
        Special::FhirUser,
        Special::Profile,
        Special::LaunchPatient,
        Special::OfflineAccess,
        Special::OnlineAccess,
    ];

    /// The scope string.
    pub fn as_str(self) -> &'static str {
        match self {
            Special::OpenId => "openid",
            Special::FhirUser => "fhirUser",
            Special::Profile => "profile",
            Special::LaunchPatient => "launch/patient",
            Special::OfflineAccess => "offline_access",
            Special::OnlineAccess => "online_access",
        }
    }

    fn parse(s: &str) -> Option<Special> {
        Special::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// A set of scopes, as granted to a client or token: resource scopes (v1 and v2 in one model)
/// and special scopes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet {
    resources: Vec<Scope>,
    special: Vec<Special>,
}

impl ScopeSet {
    /// Parses space-separated scopes. Anything that is neither a SMART resource scope nor a
    /// known special scope is refused (never silently dropped).
    pub fn parse(s: &str) -> Result<ScopeSet, String> {
        let mut out = ScopeSet::default();
        for part in s.split_ascii_whitespace() {
            if let Some(sp) = Special::parse(part) {
                if !out.special.contains(&sp) {
                    out.special.push(sp);
                }
                continue;
            }
            let sc = Scope::parse(part)?;
            if !out.resources.contains(&sc) {
                out.resources.push(sc);
            }
        }
        if out.resources.is_empty() && out.special.is_empty() {
            return Err("no scope given".into());
        }
        out.special.sort();
        Ok(out)
    }

    /// The resource scopes.
    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.resources.iter()
    }

    /// The special scopes.
    pub fn specials(&self) -> impl Iterator<Item = Special> + '_ {
        self.special.iter().copied()
    }

    /// Whether the special scope `s` is in the set.
    pub fn has(&self, s: Special) -> bool {
        self.special.contains(&s)
    }

    /// Whether every scope of `other` (resource and special) is within this set.
    pub fn contains_all(&self, other: &ScopeSet) -> Result<(), String> {
        if let Some(bad) = other.resources.iter().find(|s| !self.covers(s)) {
            return Err(bad.to_string());
        }
        if let Some(bad) = other.special.iter().find(|s| !self.special.contains(s)) {
            return Err(bad.as_str().to_string());
        }
        Ok(())
    }

    /// Whether any scope grants `perm` on `resource_type`.
    pub fn allows(&self, resource_type: &str, perm: Perm) -> bool {
        self.resources.iter().any(|s| s.allows(resource_type, perm))
    }

    /// How far the set lets `perm` on `resource_type` reach: `None` (not at all), `Some(true)`
    /// (only the patient in context, by `patient/` scopes) or `Some(false)` (unrestricted by
    /// patient, by a `user/` or `system/` scope).
    pub fn reach(&self, resource_type: &str, perm: Perm) -> Option<bool> {
        let mut patient_only = None;
        for s in self.resources.iter().filter(|s| s.allows(resource_type, perm)) {
            if s.context == Context::Patient {
                patient_only = Some(true);
            } else {
                return Some(false);
            }
        }
        patient_only
    }

    /// Whether some scope of the set covers `s`.
    pub fn covers(&self, s: &Scope) -> bool {
        self.resources.iter().any(|mine| mine.covers(s))
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            let r = if first { Ok(()) } else { f.write_str(" ") };
            first = false;
            r
        };
        for s in &self.resources {
            sep(f)?;
            write!(f, "{s}")?;
        }
        for s in &self.special {
            sep(f)?;
            f.write_str(s.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_and_v1_parse_into_one_model() {
        let v2 = Scope::parse("patient/Observation.rs").unwrap_or_else(|e| unreachable!("{e}"));
        let v1 = Scope::parse("patient/Observation.read").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(v2, v1);
        assert!(v2.allows("Observation", Perm::Search));
        assert!(!v2.allows("Observation", Perm::Create));
        assert!(!v2.allows("Patient", Perm::Read));
        assert_eq!(Scope::parse("system/*.write").map(|s| s.to_string()), Ok("system/*.cud".into()));
    }

    #[test]
    fn malformed_scopes_are_refused() {
        for bad in [
            "system/Patient.rc",
            "system/Patient.",
            "system/Patient.x",
            "admin/Patient.r",
            "system/patient.r",
            "system/Patient.rr",
            "openid",
            "system/Patient.r?code=1",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn special_scopes_parse_and_print_in_one_order() {
        let s = ScopeSet::parse("offline_access launch/patient patient/Observation.rs openid fhirUser")
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(s.to_string(), "patient/Observation.rs openid fhirUser launch/patient offline_access");
        assert!(s.has(Special::LaunchPatient) && !s.has(Special::OnlineAccess));
        assert_eq!(s.iter().count(), 1);
        assert!(ScopeSet::parse("openid launch/encounter").is_err(), "unknown special scopes are refused");
        assert!(ScopeSet::parse("launch").is_err(), "EHR launch is not offered");
        let registered = ScopeSet::parse("user/*.rs openid fhirUser").unwrap_or_else(|e| unreachable!("{e}"));
        let asked = ScopeSet::parse("user/Patient.r openid").unwrap_or_else(|e| unreachable!("{e}"));
        assert!(registered.contains_all(&asked).is_ok());
        let more = ScopeSet::parse("user/Patient.r offline_access").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(registered.contains_all(&more), Err("offline_access".into()));
    }

    #[test]
    fn mutated_scope_strings_never_panic_and_round_trip() {
        let seed =
            "patient/Observation.rs user/*.cruds system/Patient.read openid fhirUser launch/patient offline_access";
        let bytes = seed.as_bytes();
        let subs = [b' ', b'/', b'.', b'*', b'?', b'x', 0xff, b'r', b'c'];
        for i in 0..bytes.len() {
            for &b in &subs {
                let mut m = bytes.to_vec();
                if let Some(x) = m.get_mut(i) {
                    *x = b;
                }
                let mut cut = bytes.to_vec();
                cut.truncate(i);
                for cand in [m, cut] {
                    if let Ok(s) = std::str::from_utf8(&cand)
                        && let Ok(set) = ScopeSet::parse(s)
                    {
                        assert_eq!(ScopeSet::parse(&set.to_string()).ok(), Some(set), "{s}");
                    }
                }
            }
        }
    }

    #[test]
    fn cover_is_containment() {
        let all = Scope::parse("system/*.cruds").unwrap_or_else(|e| unreachable!("{e}"));
        let one = Scope::parse("system/Patient.r").unwrap_or_else(|e| unreachable!("{e}"));
        assert!(all.covers(&one));
        assert!(!one.covers(&all));
        let user = Scope::parse("user/Patient.r").unwrap_or_else(|e| unreachable!("{e}"));
        assert!(!all.covers(&user));
    }
}
