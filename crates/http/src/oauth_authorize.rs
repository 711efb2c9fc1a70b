//! `/oauth/authorize`: the authorization endpoint of the code flow (SMART standalone launch).
//!
//! `GET` checks the request (client, exact redirect URI, PKCE S256, `aud`, scopes within the
//! client's registration), then needs a full two-factor login session — otherwise it sends the
//! browser through the login pages and back — and shows a consent page in Japanese (English with
//! `?lang=en`) that lists the scopes in words and, for `launch/patient`, a patient picker showing
//! only patients the person may see. `POST` (the consent form, CSRF-protected) re-checks
//! everything, issues a one-minute code bound to the PKCE challenge and redirects to the app.
//! Approvals and refusals are audited.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use mamori_identity::session::Stage;
use mamori_oauth::{Authorization, AuthorizeError, Context, Grant, OAuthError, Perm, ScopeSet, Special};

use crate::AppState;
use crate::login::{Lang, PageQuery, esc, field, lang_of, now, render, t};
use crate::oauth::form_encode;
use mamori_access::Principal;

/// The request parameters carried from the authorization request into the consent form.
const CARRIED: [&str; 9] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "aud",
    "nonce",
];

fn resource_ja(rt: &str) -> &'static str {
    match rt {
        "Patient" => "患者基本情報",
        "Observation" => "検査結果・バイタル",
        "Condition" => "病名・問題",
        "AllergyIntolerance" => "アレルギー",
        "MedicationRequest" => "処方",
        "MedicationStatement" | "MedicationAdministration" | "MedicationDispense" => "服薬・投薬",
        "Immunization" => "予防接種",
        "Procedure" => "処置・手術",
        "DiagnosticReport" => "検査レポート",
        "DocumentReference" => "文書",
        "Encounter" => "受診・入院",
        "CarePlan" => "ケアプラン",
        "CareTeam" => "ケアチーム",
        "Practitioner" | "PractitionerRole" => "医療者",
        "Organization" => "医療機関",
        _ => "",
    }
}

/// One scope in words, for the consent page.
fn describe(scope: &mamori_oauth::Scope, lang: Lang) -> String {
    let whose = match (scope.context, lang) {
        (Context::Patient, Lang::Ja) => "選択した患者の",
        (Context::User, Lang::Ja) => "あなたが権限を持つ範囲の",
        (Context::System, Lang::Ja) => "すべての",
        (Context::Patient, Lang::En) => "the chosen patient's",
        (Context::User, Lang::En) => "what you may access of",
        (Context::System, Lang::En) => "all",
    };
    let what = match (scope.resource.as_deref(), lang) {
        (None, Lang::Ja) => "すべての種類の記録".to_string(),
        (None, Lang::En) => "records of every kind".to_string(),
        (Some(rt), Lang::Ja) if !resource_ja(rt).is_empty() => format!("{}（{rt}）", resource_ja(rt)),
        (Some(rt), _) => rt.to_string(),
    };
    let perms: Vec<&str> = [
        (Perm::Read, "閲覧", "read"),
        (Perm::Search, "検索", "search"),
        (Perm::Create, "作成", "create"),
        (Perm::Update, "更新", "update"),
        (Perm::Delete, "削除", "delete"),
    ]
    .iter()
    .filter(|(p, _, _)| scope.allows(scope.resource.as_deref().unwrap_or("Patient"), *p))
    .map(|(_, ja, en)| if lang == Lang::Ja { *ja } else { *en })
    .collect();
    if lang == Lang::Ja {
        format!("{whose}{what}の{}", perms.join("・"))
    } else {
        format!("{} {whose} {what}", perms.join(", "))
    }
}

fn describe_special(s: Special, lang: Lang) -> &'static str {
    match s {
        Special::OpenId => {
            t(lang, "あなたが誰であるか（利用者ID）をアプリに伝える", "Tell the app who you are (your user id)")
        }
        Special::FhirUser => t(
            lang,
            "あなたの職員情報（FHIR の医療者リソース）をアプリに伝える",
            "Tell the app your staff record (FHIR Practitioner)",
        ),
        Special::Profile => t(lang, "あなたの表示名をアプリに伝える", "Tell the app your display name"),
        Special::LaunchPatient => t(lang, "対象とする患者をここで選ぶ", "Choose the patient here"),
        Special::OfflineAccess => t(
            lang,
            "ログアウト後も最長30日間、再ログインなしでアクセスを続ける（リフレッシュトークン）",
            "Keep access for up to 30 days without signing in again (refresh token)",
        ),
        Special::OnlineAccess => t(
            lang,
            "ログイン中（最長12時間）はアクセスを更新できる",
            "Renew access while you are signed in (up to 12 hours)",
        ),
    }
}

/// The first language of an OpenID `ui_locales` list (BCP 47 tags, space-separated) that the
/// pages speak: `ja`, `ja-JP` → Japanese; `en`, `en-US` → English.
pub(crate) fn ui_locale(list: &str) -> Option<Lang> {
    list.split_whitespace().find_map(|tag| match tag.split(['-', '_']).next().map(str::to_ascii_lowercase).as_deref() {
        Some("ja") => Some(Lang::Ja),
        Some("en") => Some(Lang::En),
        _ => None,
    })
}

fn with_query(base: &str, params: &[(&str, &str)]) -> String {
    let mut out = base.to_string();
    let mut sep = if base.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        out.push(sep);
        out.push_str(k);
        out.push('=');
        out.push_str(&form_encode(v));
        sep = '&';
    }
    out
}

fn error_redirect(s: &AppState, redirect_uri: &str, state: Option<&str>, e: &OAuthError) -> Response {
    let mut p: Vec<(&str, &str)> = vec![("error", e.error), ("error_description", e.description.as_str())];
    if let Some(st) = state {
        p.push(("state", st));
    }
    p.push(("iss", s.config.public_url.as_str()));
    crate::login::redirect(&with_query(redirect_uri, &p), Vec::new())
}

fn error_page(s: &AppState, headers: &HeaderMap, lang: Lang, why: &str) -> Response {
    let body = format!(
        "<p>{}</p><p><small>{}</small></p>",
        t(
            lang,
            "アプリケーションの登録内容と一致しない要求のため、続行できません。アプリの提供者に連絡してください。",
            "This request does not match the application's registration, so it cannot continue. Contact the app's provider."
        ),
        esc(why)
    );
    render(s, headers, lang, t(lang, "認可できません", "Cannot authorize"), None, &body, StatusCode::BAD_REQUEST)
}

async fn check(s: &AppState, params: Vec<(String, String)>) -> Result<Authorization, AuthorizeError> {
    let oauth = s.oauth.clone();
    let base = format!("{}/fhir", s.config.public_url);
    tokio::task::spawn_blocking(move || oauth.check_authorize(&params, &base))
        .await
        .unwrap_or_else(|_| Err(AuthorizeError::NoRedirect("internal error".into())))
}

/// The signed-in person with a full two-factor session, or where to send the browser.
/// The signed-in person, or a redirect to sign in (in `lang`, when the app asked for one by
/// `ui_locales`) and come back to `back`.
async fn person(
    s: &AppState,
    headers: &HeaderMap,
    back: &str,
    lang: Option<Lang>,
) -> Result<mamori_identity::session::Session, Response> {
    let in_lang = match lang {
        Some(Lang::En) => "lang=en&",
        Some(Lang::Ja) => "lang=ja&",
        None => "",
    };
    let login = || crate::login::redirect(&format!("/login?{in_lang}next={}", form_encode(back)), Vec::new());
    let Some(token) = crate::login::session_of(s, headers) else { return Err(login()) };
    let (id, ua) = (s.identity.clone(), crate::login::browser(headers));
    let t = now(s.enforcer.clock());
    match tokio::task::spawn_blocking(move || id.session(&token, &ua, t)).await {
        Ok(Ok(Ok(sess))) if sess.stage == Stage::Full => Ok(sess),
        Ok(Ok(Ok(sess))) => Err(crate::login::redirect(&crate::login::stage_path(sess.stage, back), Vec::new())),
        Ok(Ok(Err(_))) => Err(login()),
        _ => Err(crate::login::redirect("/login", Vec::new())),
    }
}

/// A principal for the person alone (their roles; the patient picker's reach is theirs, not the
/// app's): `user/Patient.rs`.
fn person_principal(s: &AppState, username: &str) -> Option<Principal> {
    let a = s.identity.account(username).ok()??;
    if a.status != mamori_identity::account::Status::Active {
        return None;
    }
    let grant = Grant {
        client_id: "mamori-consent".into(),
        subject: Some(username.to_string()),
        fhir_user: a.fhir_user.clone(),
        scopes: ScopeSet::parse("user/Patient.rs").ok()?,
        expires_at: i64::MAX,
        client_classes: Vec::new(),
        patient: None,
    };
    Some(Principal::new(grant, Some((a.roles, a.fhir_user, a.department)), s.enforcer.clone(), None, None))
}

/// Patients matching an id, identifier or name (kanji or kana, by prefix) that the person may
/// see: `(id, label)`. Each lookup is a read by the person, audited by the record service.
async fn find_patients(s: &AppState, username: &str, query: &str) -> Vec<(String, String)> {
    let Some(p) = person_principal(s, username) else { return Vec::new() };
    let records = s.records.clone();
    let q = query.trim().to_string();
    if q.is_empty() || q.len() > 128 {
        return Vec::new();
    }
    tokio::task::spawn_blocking(move || {
        let found = mamori_records::patients::find(&records, &p.context(), &q, 20).ok()?;
        Some(
            found.into_iter().map(|v| (v.id.to_string(), mamori_records::patients::label(v.body.as_deref()))).collect(),
        )
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_default()
}

fn hidden(params: &[(String, String)]) -> String {
    params
        .iter()
        .filter(|(k, _)| CARRIED.contains(&k.as_str()))
        .map(|(k, v)| format!(r#"<input type="hidden" name="{}" value="{}">"#, esc(k), esc(v)))
        .collect()
}

#[expect(clippy::too_many_arguments, reason = "the parts of one page")]
fn consent_page(
    s: &AppState,
    headers: &HeaderMap,
    lang: Lang,
    a: &Authorization,
    params: &[(String, String)],
    username: &str,
    patients: Option<(&str, &[(String, String)])>,
    error: Option<&str>,
) -> Response {
    let app = a.client.name.clone().unwrap_or_else(|| a.client.id.clone());
    let mut items: Vec<String> = a.scopes.iter().map(|sc| format!("<li>{}</li>", esc(&describe(sc, lang)))).collect();
    items.extend(a.scopes.specials().map(|sp| format!("<li>{}</li>", esc(describe_special(sp, lang)))));
    let picker = match patients {
        None => String::new(),
        Some((query, found)) => {
            let search = format!(
                r#"<form method="get" action="/oauth/authorize">{hidden}<label for="patient_query">{l}</label><input id="patient_query" name="patient_query" value="{q}" autocomplete="off"><button type="submit">{b}</button></form>"#,
                hidden = hidden(params),
                l = t(
                    lang,
                    "患者を検索（患者ID・患者番号・氏名（漢字・カナ））",
                    "Find the patient (patient id, number or name)"
                ),
                q = esc(query),
                b = t(lang, "検索", "Search"),
            );
            let list = if found.is_empty() && !query.is_empty() {
                format!("<p>{}</p>", t(lang, "該当する患者はいません。", "No patient found."))
            } else {
                found
                    .iter()
                    .map(|(id, label)| {
                        format!(
                            r#"<label><input type="radio" name="patient" value="{id}" form="consent" required> {label} <small>(Patient/{id})</small></label>"#,
                            id = esc(id),
                            label = esc(label),
                        )
                    })
                    .collect()
            };
            format!("<h2>{}</h2>{search}{list}", t(lang, "対象患者の選択", "Choose the patient"))
        }
    };
    let body = format!(
        r#"<p>{intro_a}<strong>{app}</strong>{intro_b}</p><p>{who}: <strong>{user}</strong></p><ul>{items}</ul>{picker}
<form id="consent" method="post" action="/oauth/authorize">{{csrf}}{hidden}
<button type="submit" name="decision" value="allow">{allow}</button> <button type="submit" name="decision" value="deny" formnovalidate>{deny}</button></form>"#,
        intro_a = t(lang, "アプリケーション ", "The application "),
        app = esc(&app),
        intro_b = t(lang, " が、次のアクセスを求めています。", " asks for the following access."),
        who = t(lang, "ログイン中", "Signed in as"),
        user = esc(username),
        items = items.concat(),
        hidden = hidden(params),
        allow = t(lang, "許可する", "Allow"),
        deny = t(lang, "許可しない", "Deny"),
    );
    let mut r = render(
        s,
        headers,
        lang,
        t(lang, "アクセスの許可", "Allow access"),
        error,
        &body,
        if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK },
    );
    // The approval redirects to the app: the form's target chain must be allowed to leave.
    let origin = app_origin(&a.redirect_uri);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' {origin}; frame-ancestors 'none'"
    )) {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

fn app_origin(uri: &str) -> String {
    match uri.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?']).next().unwrap_or("");
            format!("{scheme}://{host}")
        }
        None => uri.split(':').next().map(|s| format!("{s}:")).unwrap_or_default(),
    }
}

/// One audit entry through the single append path (`crate::audit::append`): `false` if it could
/// not be written, and then nothing may be shown.
#[expect(clippy::too_many_arguments, reason = "the fields of one audit entry")]
async fn audit(
    s: &AppState,
    action: &str,
    username: &str,
    client: &str,
    outcome: mamori_audit::Outcome,
    detail: String,
    patients: Vec<String>,
    source: Option<String>,
) -> bool {
    let mut rec = mamori_audit::AuditRecord::new(
        action,
        mamori_audit::AuditActor {
            client_id: Some(client.to_string()),
            fhir_user: None,
            id: username.to_string(),
            kind: mamori_audit::ActorKind::User,
        },
        outcome,
        "TREAT",
    );
    rec.detail = Some(detail);
    rec.resources = if action == "search" { patients.clone() } else { vec!["/oauth/authorize".into()] };
    rec.patients = patients;
    rec.source = source;
    crate::audit::append(s, rec).await.is_ok()
}

/// `GET /oauth/authorize`.
pub async fn authorize(
    State(s): State<AppState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let raw = q.unwrap_or_default();
    let page = PageQuery::default();
    let lang = lang_of(&page, &headers);
    let Ok(params) = crate::oauth::parse_form(raw.as_bytes()) else {
        return error_page(&s, &headers, lang, "malformed query");
    };
    let asked = params.iter().find(|(k, _)| k == "ui_locales").and_then(|(_, v)| ui_locale(v));
    let lang = match params.iter().find(|(k, _)| k == "lang").map(|(_, v)| v.as_str()) {
        Some("en") => Lang::En,
        Some("ja") => Lang::Ja,
        _ => asked.unwrap_or(lang),
    };
    let request: Vec<(String, String)> =
        params.iter().filter(|(k, _)| CARRIED.contains(&k.as_str())).cloned().collect();
    let extra: Vec<(String, String)> = params.iter().filter(|(k, _)| !CARRIED.contains(&k.as_str())).cloned().collect();
    let a = match check(&s, params.clone()).await {
        Ok(a) => a,
        Err(AuthorizeError::NoRedirect(why)) => return error_page(&s, &headers, lang, &why),
        Err(AuthorizeError::Redirect { redirect_uri, state, error }) => {
            return error_redirect(&s, &redirect_uri, state.as_deref(), &error);
        }
    };
    let prompt_none = extra.iter().any(|(k, v)| k == "prompt" && v.split(' ').any(|p| p == "none"));
    let back = format!("/oauth/authorize?{raw}");
    let sess = match person(&s, &headers, &back, asked).await {
        Ok(sess) => sess,
        Err(_) if prompt_none => {
            return error_redirect(
                &s,
                &a.redirect_uri,
                a.state.as_deref(),
                &OAuthError::new("login_required", 400, "no two-factor sign-in"),
            );
        }
        Err(r) => return r,
    };
    if prompt_none {
        return error_redirect(
            &s,
            &a.redirect_uri,
            a.state.as_deref(),
            &OAuthError::new("consent_required", 400, "each authorization is approved on the consent page"),
        );
    }
    let patients = if a.scopes.has(Special::LaunchPatient) {
        let query = extra.iter().find(|(k, _)| k == "patient_query").map(|(_, v)| v.clone()).unwrap_or_default();
        let found = find_patients(&s, &sess.username, &query).await;
        // The picker reveals patients' names and birth dates: audited like any search.
        if !query.is_empty() {
            let shown: Vec<String> = found.iter().map(|(id, _)| format!("Patient/{id}")).collect();
            let detail =
                format!("patient picker: `{}`, {} shown", query.chars().take(128).collect::<String>(), shown.len());
            let source = peer.as_ref().map(|p| p.0.0.ip().to_string());
            if !audit(&s, "search", &sess.username, &a.client.id, mamori_audit::Outcome::Success, detail, shown, source)
                .await
            {
                return crate::login::server_error(&s, &headers, lang);
            }
        }
        Some((query, found))
    } else {
        None
    };
    consent_page(
        &s,
        &headers,
        lang,
        &a,
        &request,
        &sess.username,
        patients.as_ref().map(|(q, f)| (q.as_str(), f.as_slice())),
        None,
    )
}

/// `POST /oauth/authorize`: the consent decision.
/// `POST /oauth/authorize`: either the app's authorization request sent as a form
/// (`authorize-post` in SMART's capabilities) — answered with a 303 to the same request as a GET,
/// which checks it, signs the person in and asks for consent exactly as a GET does — or the
/// person's consent decision (it has `decision` and the form's CSRF token), see [`decide`].
pub async fn authorize_post(
    State(s): State<AppState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let lang = lang_of(&PageQuery::default(), &headers);
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024).await else {
        return crate::login::bad_request(&s, &headers, lang);
    };
    let Ok(f) = crate::oauth::parse_form(&bytes) else {
        return crate::login::bad_request(&s, &headers, lang);
    };
    if form_type && !f.iter().any(|(k, _)| k == "decision" || k == "csrf") {
        let query: String = f.iter().map(|(k, v)| format!("{k}={}", form_encode(v))).collect::<Vec<_>>().join("&");
        let mut r = axum::response::IntoResponse::into_response(StatusCode::SEE_OTHER);
        if let Ok(v) = HeaderValue::from_str(&format!("/oauth/authorize?{query}")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return r;
    }
    decide(State(s), peer, headers, Body::from(bytes)).await
}

/// The person's consent decision on the page [`authorize`] showed (CSRF-checked form).
pub async fn decide(
    State(s): State<AppState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let lang = lang_of(&PageQuery::default(), &headers);
    let Some(f) = crate::login::form(&s, &headers, body).await else {
        return crate::login::bad_request(&s, &headers, lang);
    };
    let request: Vec<(String, String)> = f.iter().filter(|(k, _)| CARRIED.contains(&k.as_str())).cloned().collect();
    let a = match check(&s, request.clone()).await {
        Ok(a) => a,
        Err(AuthorizeError::NoRedirect(why)) => return error_page(&s, &headers, lang, &why),
        Err(AuthorizeError::Redirect { redirect_uri, state, error }) => {
            return error_redirect(&s, &redirect_uri, state.as_deref(), &error);
        }
    };
    let query: String = request.iter().map(|(k, v)| format!("{k}={}", form_encode(v))).collect::<Vec<_>>().join("&");
    let sess = match person(&s, &headers, &format!("/oauth/authorize?{query}"), None).await {
        Ok(sess) => sess,
        Err(r) => return r,
    };
    let source = peer.map(|p| p.0.0.ip().to_string());
    if field(&f, "decision") != "allow" {
        if !audit(
            &s,
            "authorize",
            &sess.username,
            &a.client.id,
            mamori_audit::Outcome::Denied,
            format!("refused {}", a.scopes),
            Vec::new(),
            source,
        )
        .await
        {
            return crate::login::server_error(&s, &headers, lang);
        }
        let e = OAuthError::new("access_denied", 403, "the person did not allow the access");
        return error_redirect(&s, &a.redirect_uri, a.state.as_deref(), &e);
    }
    let account = s.identity.account(&sess.username).ok().flatten();
    let mut patient = None;
    if a.scopes.has(Special::LaunchPatient) {
        let chosen = field(&f, "patient").to_string();
        let visible =
            !chosen.is_empty() && find_patients(&s, &sess.username, &chosen).await.iter().any(|(id, _)| *id == chosen);
        if !visible {
            let msg = t(lang, "対象患者を選択してください。", "Choose the patient.");
            return consent_page(&s, &headers, lang, &a, &request, &sess.username, Some(("", &[])), Some(msg));
        }
        patient = Some(format!("Patient/{chosen}"));
    }
    let (oauth, a2, user) = (s.oauth.clone(), a.clone(), sess.username.clone());
    let fhir_user = account.as_ref().and_then(|a| a.fhir_user.clone());
    let name = account.as_ref().and_then(|a| a.display_name.clone());
    let p2 = patient.clone();
    let t = now(s.enforcer.clock());
    let issued = tokio::task::spawn_blocking(move || {
        oauth.issue_code(&a2, &user, fhir_user.as_deref(), name.as_deref(), p2.as_deref(), sess.created, &sess.amr, t)
    })
    .await;
    let code = match issued {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => return error_redirect(&s, &a.redirect_uri, a.state.as_deref(), &e),
        Err(_) => return crate::login::server_error(&s, &headers, lang),
    };
    if !audit(
        &s,
        "authorize",
        &sess.username,
        &a.client.id,
        mamori_audit::Outcome::Success,
        format!("approved {}", a.scopes),
        patient.iter().cloned().collect(),
        source,
    )
    .await
    {
        return crate::login::server_error(&s, &headers, lang);
    }
    let mut p: Vec<(&str, &str)> = vec![("code", code.as_str())];
    if let Some(st) = a.state.as_deref() {
        p.push(("state", st));
    }
    p.push(("iss", s.config.public_url.as_str()));
    crate::login::redirect(&with_query(&a.redirect_uri, &p), Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_in_words() {
        let sc = mamori_oauth::Scope::parse("patient/Observation.rs").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(describe(&sc, Lang::Ja), "選択した患者の検査結果・バイタル（Observation）の閲覧・検索");
        let sc = mamori_oauth::Scope::parse("user/*.cruds").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(describe(&sc, Lang::Ja), "あなたが権限を持つ範囲のすべての種類の記録の閲覧・検索・作成・更新・削除");
        assert_eq!(
            describe(&sc, Lang::En),
            "read, search, create, update, delete what you may access of records of every kind"
        );
        assert_eq!(app_origin("https://app.example.jp/cb?x=1"), "https://app.example.jp");
        assert_eq!(app_origin("jp.example.app:/cb"), "jp.example.app:");
        assert_eq!(
            with_query("https://a/cb?x=1", &[("code", "a b"), ("state", "s/1")]),
            "https://a/cb?x=1&code=a%20b&state=s/1"
        );
    }
}
