//! The class taxonomy and labelling rules. Rules are configuration: they are stored and changed
//! through the audited configuration path (kind `class-rules`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The code system of information classes.
pub const SYSTEM: &str = "urn:mamori:information-class";

/// One class of the taxonomy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassDef {
    /// Code.
    pub code: String,
    /// 日本語.
    pub ja: String,
    /// English.
    pub en: String,
}

/// The shipped taxonomy.
pub fn taxonomy() -> Vec<ClassDef> {
    [
        ("general", "一般診療", "general clinical"),
        ("administrative", "事務", "administrative"),
        ("infectious", "感染症", "infectious disease"),
        ("genetic", "遺伝子", "genetic"),
        ("mental", "精神科", "mental health"),
        ("hiv", "HIV/性感染症", "HIV and sexually transmitted infections"),
        ("reproductive", "生殖医療", "reproductive medicine"),
        ("audit", "アクセスログ", "audit trail"),
        ("system", "システム設定", "system configuration"),
    ]
    .into_iter()
    .map(|(c, ja, en)| ClassDef { code: c.into(), ja: ja.into(), en: en.into() })
    .collect()
}

/// A rule matching codes: exact codes or code prefixes within one code system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRule {
    /// Code system URI.
    pub system: String,
    /// Exact codes.
    #[serde(default)]
    pub codes: Vec<String>,
    /// Code prefixes (e.g. an ICD-10 block `F`, `B20`).
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// The class it adds.
    pub class: String,
}

/// Labelling rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// Classes by resource type.
    pub by_type: BTreeMap<String, Vec<String>>,
    /// Classes for types not listed.
    pub default: Vec<String>,
    /// Classes added when any Coding in the resource matches.
    pub by_code: Vec<CodeRule>,
    /// Classes added when a CodeableConcept carries only text (no coding) containing a word
    /// (issue #22: a text-only diagnosis must not escape its class).
    #[serde(default)]
    pub by_text: Vec<TextRule>,
}

/// A rule matching the text of an uncoded CodeableConcept: any of `words` (compared after
/// lower-casing and NFKC width folding) adds `class`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextRule {
    /// Words or phrases.
    pub words: Vec<String>,
    /// The class it adds.
    pub class: String,
}

/// Code systems that are ICD-10 or a national modification of it (ICD-10-CM, the OIDs of both,
/// and any system URI naming ICD-10, such as Japanese ICD-10 code systems beside MEDIS 標準病名):
/// the ICD-10 rules apply to them all. ICD-10 codes are case-insensitive and may be written with
/// or without the dot.
fn is_icd10(system: &str) -> bool {
    let s = system.to_ascii_lowercase();
    s == ICD10
        || s.starts_with("http://hl7.org/fhir/sid/icd-10")
        || s == "urn:oid:2.16.840.1.113883.6.3"
        || s == "urn:oid:2.16.840.1.113883.6.90"
        || s.contains("icd-10")
        || s.contains("icd10")
}

/// A code as rules compare it: ICD-10 codes upper-cased without the dot.
fn norm_code(system: &str, code: &str) -> String {
    if is_icd10(system) { code.trim().to_ascii_uppercase().replace('.', "") } else { code.trim().to_string() }
}

const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";
const LOINC: &str = "http://loinc.org";
const SNOMED: &str = "http://snomed.info/sct";

/// The shipped rules (a starting point each institution reviews).
pub fn default_rules() -> Rules {
    let mut by_type = BTreeMap::new();
    for t in [
        "Patient",
        "Coverage",
        "Appointment",
        "AppointmentResponse",
        "Schedule",
        "Slot",
        "Account",
        "Claim",
        "ClaimResponse",
        "Invoice",
        "ChargeItem",
        "PaymentNotice",
        "PaymentReconciliation",
        "EligibilityRequest",
        "CoverageEligibilityRequest",
        "CoverageEligibilityResponse",
        "Organization",
        "Location",
        "Practitioner",
        "PractitionerRole",
        "HealthcareService",
        "Endpoint",
        "RelatedPerson",
        "Person",
        "Group",
        // Registering a visit (受付) or a care team is the front office's work, and it is what
        // establishes the care relationship clinicians then act within.
        "Encounter",
        "EpisodeOfCare",
        "CareTeam",
    ] {
        by_type.insert(t.to_string(), vec!["administrative".to_string()]);
    }
    by_type.insert("AuditEvent".into(), vec!["audit".into()]);
    for t in ["CapabilityStatement", "StructureDefinition", "SearchParameter", "OperationDefinition", "Subscription"] {
        by_type.insert(t.to_string(), vec!["system".to_string()]);
    }
    let rule = |system: &str, codes: &[&str], prefixes: &[&str], class: &str| CodeRule {
        system: system.into(),
        codes: codes.iter().map(|s| (*s).to_string()).collect(),
        prefixes: prefixes.iter().map(|s| (*s).to_string()).collect(),
        class: class.into(),
    };
    Rules {
        by_type,
        default: vec!["general".into()],
        by_code: vec![
            // ICD-10 blocks.
            rule(ICD10, &[], &["F"], "mental"),
            rule(
                ICD10,
                &[],
                &[
                    "B20", "B21", "B22", "B23", "B24", "Z21", "A50", "A51", "A52", "A53", "A54", "A55", "A56", "A57",
                    "A58", "A59", "A60", "A63", "A64",
                ],
                "hiv",
            ),
            rule(
                ICD10,
                &[],
                &[
                    "A0", "A1", "A2", "A3", "A4", "A7", "A8", "A9", "B0", "B1", "B3", "B4", "B5", "B6", "B7", "B8",
                    "B9", "U07",
                ],
                "infectious",
            ),
            rule(
                ICD10,
                &[],
                &["Z30", "Z31", "Z32", "Z33", "Z34", "Z35", "Z36", "Z37", "Z39", "N97", "O"],
                "reproductive",
            ),
            rule(ICD10, &[], &["Q9"], "genetic"),
            // LOINC: HIV tests (antibody, antigen, antigen+antibody, RNA/DNA load and genotype of
            // HIV-1 and HIV-2, from LOINC's HIV 1 / HIV 2 component parts), genetic analyses,
            // SARS-CoV-2.
            rule(
                LOINC,
                &[
                    "7917-8", "5221-7", "68961-2", "56888-1", "75622-1", "25836-8", "20447-9", "31201-7", "5220-9",
                    "5222-5", "7918-6", "9821-1", "10351-6", "25835-0", "29893-5", "30361-0", "43009-0", "49580-4",
                    "49905-3", "62469-2", "41513-3", "41514-1", "41515-8", "41516-6", "75666-8", "48345-3", "48346-1",
                    "13499-0", "21007-0", "29539-4", "33866-5", "40733-8", "42917-5", "44533-8", "44607-0", "44873-8",
                    "51786-2", "57974-8", "57975-5", "69668-2", "80387-4", "85361-4", "85368-9", "86233-4", "89365-1",
                    "89374-3",
                ],
                &[],
                "hiv",
            ),
            rule(
                LOINC,
                &["51969-4", "55232-3", "81247-9", "69548-6", "48018-6", "48013-7", "51958-7", "62374-4"],
                &[],
                "genetic",
            ),
            rule(LOINC, &["94500-6", "94309-2", "94531-1"], &[], "infectious"),
            // SNOMED CT: HIV infection, mental disorder, pregnancy, genetic disorder.
            rule(SNOMED, &["86406008", "165816005"], &[], "hiv"),
            rule(SNOMED, &["74732009", "35489007", "58214004", "13746004"], &[], "mental"),
            rule(SNOMED, &["77386006", "72892002"], &[], "reproductive"),
            rule(SNOMED, &["409709004", "32895009"], &[], "genetic"),
            rule(SNOMED, &["840539006", "56717001"], &[], "infectious"),
        ],
        by_text: vec![
            TextRule {
                words: [
                    "hiv",
                    "acquired immunodeficiency",
                    "エイズ",
                    "後天性免疫不全",
                    "梅毒",
                    "淋菌",
                    "クラミジア",
                    "性感染",
                ]
                .map(str::to_string)
                .to_vec(),
                class: "hiv".into(),
            },
            TextRule {
                words: [
                    "精神",
                    "うつ",
                    "鬱",
                    "統合失調",
                    "双極",
                    "躁",
                    "不安障害",
                    "パニック障害",
                    "適応障害",
                    "摂食障害",
                    "依存症",
                    "自殺",
                    "psychiatr",
                    "depress",
                    "schizo",
                    "bipolar",
                ]
                .map(str::to_string)
                .to_vec(),
                class: "mental".into(),
            },
            TextRule {
                words: ["遺伝", "染色体", "genetic", "hereditary"].map(str::to_string).to_vec(),
                class: "genetic".into(),
            },
            TextRule {
                words: ["妊娠", "分娩", "不妊", "流産", "中絶", "pregnan", "infertil", "abortion"]
                    .map(str::to_string)
                    .to_vec(),
                class: "reproductive".into(),
            },
            TextRule {
                words: ["結核", "肝炎", "感染症", "tubercul", "hepatitis"].map(str::to_string).to_vec(),
                class: "infectious".into(),
            },
        ],
    }
}

/// Why rules or labels are not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LabelError(pub String);

impl Rules {
    /// Checks that every class named is in the taxonomy.
    pub fn validate(&self) -> Result<(), LabelError> {
        let known: BTreeSet<String> = taxonomy().into_iter().map(|c| c.code).collect();
        let named = self
            .by_type
            .values()
            .flatten()
            .chain(&self.default)
            .chain(self.by_code.iter().map(|r| &r.class))
            .chain(self.by_text.iter().map(|r| &r.class));
        for c in named {
            if !known.contains(c) {
                return Err(LabelError(format!("`{c}` is not an information class")));
            }
        }
        if self.default.is_empty() {
            return Err(LabelError("`default` needs at least one class".into()));
        }
        Ok(())
    }
}

/// Every Coding's `(system, code)` in `v`, and the text of every CodeableConcept that has no
/// coding (`texts`).
fn codings<'a>(v: &'a Value, out: &mut Vec<(&'a str, &'a str)>, texts: &mut Vec<&'a str>, depth: usize) {
    if depth > 32 {
        return;
    }
    match v {
        Value::Object(o) => {
            if let (Some(Value::String(s)), Some(Value::String(c))) = (o.get("system"), o.get("code")) {
                out.push((s.as_str(), c.as_str()));
            }
            if let (Some(Value::String(t)), None) = (o.get("text"), o.get("coding")) {
                // A CodeableConcept's text (a Narrative's `text` is an object, not a string).
                texts.push(t.as_str());
            }
            for (k, child) in o {
                // The resource's own security labels are handled separately; contained
                // resources are labelled with their container.
                if k != "meta" {
                    codings(child, out, texts, depth + 1);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| codings(x, out, texts, depth + 1)),
        _ => {}
    }
}

/// The classes a resource carries: explicit labels of our system (which must be known classes)
/// plus those the rules add from its type and every Coding in it.
pub fn classify(rules: &Rules, resource_type: &str, body: &Value) -> Result<BTreeSet<String>, LabelError> {
    let known: BTreeSet<String> = taxonomy().into_iter().map(|c| c.code).collect();
    let mut out = BTreeSet::new();
    if let Some(labels) = body.pointer("/meta/security").and_then(Value::as_array) {
        for l in labels {
            if l.get("system").and_then(Value::as_str) == Some(SYSTEM) {
                let code = l.get("code").and_then(Value::as_str).unwrap_or("");
                if !known.contains(code) {
                    return Err(LabelError(format!("meta.security: `{code}` is not an information class of {SYSTEM}")));
                }
                out.insert(code.to_string());
            }
        }
    }
    out.extend(rules.by_type.get(resource_type).unwrap_or(&rules.default).iter().cloned());
    let mut found = Vec::new();
    let mut texts = Vec::new();
    codings(body, &mut found, &mut texts, 0);
    for (system, code) in found {
        let icd = is_icd10(system);
        let code = norm_code(system, code);
        for r in rules.by_code.iter().filter(|r| r.system == system || (icd && is_icd10(&r.system))) {
            let matches = |c: &String| norm_code(&r.system, c) == code;
            let starts = |p: &String| code.starts_with(norm_code(&r.system, p).as_str());
            if r.codes.iter().any(matches) || r.prefixes.iter().any(starts) {
                out.insert(r.class.clone());
            }
        }
    }
    for t in texts {
        let t = t.to_lowercase();
        for r in &rules.by_text {
            if r.words.iter().any(|w| t.contains(&w.to_lowercase())) {
                out.insert(r.class.clone());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn types_codes_and_explicit_labels() {
        let r = default_rules();
        r.validate().unwrap_or_else(|e| unreachable!("{e}"));
        let c = |rt: &str, v: Value| classify(&r, rt, &v).unwrap_or_default().into_iter().collect::<Vec<_>>();
        assert_eq!(c("Patient", json!({"resourceType": "Patient"})), vec!["administrative"]);
        assert_eq!(c("Observation", json!({"resourceType": "Observation"})), vec!["general"]);
        let hiv = json!({"resourceType": "Observation", "code": {"coding": [{"system": "http://loinc.org", "code": "7917-8"}]}});
        assert_eq!(c("Observation", hiv), vec!["general", "hiv"]);
        let dx = json!({"resourceType": "Condition", "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "F32.1"}]}});
        assert_eq!(c("Condition", dx), vec!["general", "mental"]);
        let labelled = json!({"resourceType": "Observation", "meta": {"security": [{"system": SYSTEM, "code": "genetic"}, {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}});
        assert_eq!(c("Observation", labelled), vec!["general", "genetic"]);
        let bad = json!({"resourceType": "Observation", "meta": {"security": [{"system": SYSTEM, "code": "secret"}]}});
        assert!(classify(&r, "Observation", &bad).is_err());
        let mut wrong = default_rules();
        wrong.default = vec!["nonsense".into()];
        assert!(wrong.validate().is_err());
    }

    /// Issue #22 (6): codings the shipped rules missed.
    #[test]
    fn common_codings_and_text_only_diagnoses_are_labelled() {
        let r = default_rules();
        let c = |v: Value| classify(&r, "Condition", &v).unwrap_or_default();
        let coded = |system: &str, code: &str| json!({"resourceType": "Condition", "code": {"coding": [{"system": system, "code": code}]}});
        for (system, code) in [
            ("http://hl7.org/fhir/sid/icd-10-cm", "B20"),
            ("urn:oid:2.16.840.1.113883.6.3", "B20"),
            ("urn:oid:2.16.840.1.113883.6.90", "B20"),
            ("http://hl7.org/fhir/sid/icd-10", "b20"),
            ("http://hl7.org/fhir/sid/icd-10", "Z21"),
            ("http://jpfhir.jp/fhir/core/CodeSystem/JP_ICD10_CS", "B24"),
        ] {
            assert!(c(coded(system, code)).contains("hiv"), "{system} {code}");
        }
        assert!(c(coded("http://hl7.org/fhir/sid/icd-10-cm", "f32.1")).contains("mental"));
        // A JP Core Condition: MEDIS 標準病名 code beside its ICD-10 code.
        let jp = json!({"resourceType": "Condition", "code": {"coding": [
            {"system": "http://medis.or.jp/CodeSystem/master-disease-keyNumber", "code": "20054525"},
            {"system": "http://jpfhir.jp/fhir/core/CodeSystem/JP_ICD10_CS", "code": "F20.0"}]}});
        assert!(c(jp).contains("mental"));
        for code in ["20447-9", "31201-7"] {
            let v = json!({"resourceType": "Observation", "code": {"coding": [{"system": "http://loinc.org", "code": code}]}});
            assert!(classify(&r, "Observation", &v).unwrap_or_default().contains("hiv"), "{code}");
        }
        let text = |t: &str| json!({"resourceType": "Condition", "code": {"text": t}});
        assert!(c(text("HIV感染症")).contains("hiv"));
        assert!(c(text("統合失調症")).contains("mental"));
        assert!(c(text("妊娠高血圧症候群")).contains("reproductive"));
        assert_eq!(c(text("高血圧症")).into_iter().collect::<Vec<_>>(), vec!["general"]);
        // A narrative is not a CodeableConcept's text.
        let narrative = json!({"resourceType": "Condition", "text": {"status": "generated", "div": "<div>HIV</div>"}});
        assert!(!c(narrative).contains("hiv"));
    }
}
