//! `GET /fhir/metadata`: a CapabilityStatement that says exactly what this server does.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::fhir_response;

/// `GET /fhir/metadata` (no token needed).
pub async fn metadata(State(s): State<AppState>) -> Response {
    fhir_response(StatusCode::OK, &capability_statement(&s))
}

fn kind_name(k: mamori_fhir_schema::ParamKind) -> &'static str {
    use mamori_fhir_schema::ParamKind as K;
    match k {
        K::Number => "number",
        K::Date => "date",
        K::String => "string",
        K::Token => "token",
        K::Reference => "reference",
        K::Composite => "composite",
        K::Quantity => "quantity",
        K::Uri => "uri",
        K::Special => "special",
    }
}

fn capability_statement(s: &AppState) -> Value {
    let schema = mamori_fhir_schema::r4();
    let base = &s.config.public_url;
    let resources: Vec<Value> = schema
        .resources()
        .iter()
        .map(|rt| {
            let mut params: Vec<(&str, &str)> = mamori_records::search::extract::params(rt)
                .filter(|p| p.table().is_some())
                .map(|p| (p.code.as_str(), kind_name(p.kind)))
                .chain([("_id", "token"), ("_lastUpdated", "date")])
                .collect();
            params.sort_unstable();
            let search_params: Vec<Value> = params.iter().map(|(n, k)| json!({"name": n, "type": k})).collect();
            let mut includes: Vec<String> = mamori_records::search::extract::params(rt)
                .filter(|p| p.kind == mamori_fhir_schema::ParamKind::Reference && p.table().is_some())
                .map(|p| format!("{rt}:{}", p.code))
                .collect();
            includes.sort_unstable();
            json!({
                "type": rt,
                "interaction": [
                    {"code": "read"}, {"code": "vread"}, {"code": "update"}, {"code": "patch"},
                    {"code": "delete"}, {"code": "history-instance"}, {"code": "history-type"},
                    {"code": "create"}, {"code": "search-type"}
                ],
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "searchParam": search_params,
                "searchInclude": includes,
                "operation": [{"name": "approve", "definition": "urn:mamori:OperationDefinition:approve",
                    "documentation": "the author finalises (確定) a version entered on their behalf (代行入力)"}]
            })
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": s.started,
        "publisher": "Mamori",
        "kind": "instance",
        "software": {"name": "Mamori", "version": s.config.version},
        "implementation": {"description": "Mamori FHIR R4 server", "url": format!("{base}/fhir")},
        "fhirVersion": schema.fhir_version(),
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "instantiates": ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],
        "rest": [{
            "mode": "server",
            "documentation": "Every interaction except metadata needs a bearer access token (OAuth 2.0 client credentials). Search takes the official R4 search parameters listed per resource (see docs/SEARCH.md for modifiers and paging); conditional interactions take `_id` and `identifier` only.",
            "security": {
                "cors": true,
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
                "extension": [{
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": [
                        {"url": "authorize", "valueUri": format!("{base}/oauth/authorize")},
                        {"url": "token", "valueUri": format!("{base}/oauth/token")},
                        {"url": "introspect", "valueUri": format!("{base}/oauth/introspect")},
                        {"url": "revoke", "valueUri": format!("{base}/oauth/revoke")},
                        {"url": "manage", "valueUri": format!("{base}/account")}
                    ]
                }]
            },
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
            "operation": [
                {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"},
                {"name": "patient-export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"},
                {"name": "group-export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"},
                {"name": "import", "definition": format!("{base}/fhir/OperationDefinition/import"),
                 "documentation": "POST an application/fhir+ndjson body; see docs/BULK.md"}
            ]
        }]
    })
}
