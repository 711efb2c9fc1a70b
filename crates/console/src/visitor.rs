//! The person behind a console request: their browser session (checked by the sign-in pages'
//! code), their account's current roles as a use-case context, their language, and the menu
//! their rights give them.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, OriginalUri};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::Response;
use mamori_app::messages::Lang;
use mamori_app::{AdminAct, Ctx};
use mamori_http::browser::{self, NotSignedIn};

use crate::Console;

/// One entry of the menu.
pub struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// What the person may use, decided by the policies in force for their roles (nothing here is
/// recorded; each use case decides again, and audits a refusal).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rights {
    pub read_audit: bool,
    pub manage_users: bool,
    /// Register, disable, rotate applications.
    pub manage_clients: bool,
    /// Replace the access policies.
    pub set_policies: bool,
    /// Replace the information-class rules.
    pub set_class_rules: bool,
    /// Rotate the ID-token signing keys.
    pub rotate_keys: bool,
    pub review_break_glass: bool,
    pub review_access: bool,
    /// Approve another person's high-risk change (the two-person rule).
    pub approve_change: bool,
    /// Switch emergency read-only mode (非常時の参照専用モード).
    pub emergency_mode: bool,
    pub vendor: bool,
    /// Files maintenance requests and reports (a vendor's contact, the system administrator).
    pub request_maintenance: bool,
    /// Approves maintenance windows, ends them, reviews their reports.
    pub approve_maintenance: bool,
    /// Works with clinical records (patient search, records, approvals).
    pub clinical: bool,
    /// May break the glass on a patient outside their care.
    pub break_glass: bool,
}

/// A signed-in person.
pub struct Visitor {
    pub ctx: Ctx,
    pub lang: Lang,
    pub csrf: String,
    pub rights: Rights,
    /// The path asked for, below `/console` (for the menu and the language switch).
    pub path: String,
    /// Cookies to set with the page (a language chosen by `?lang=`).
    pub cookies: Vec<String>,
    /// This node is in emergency read-only mode (every page says so).
    pub read_only: bool,
}

impl Visitor {
    pub fn ja(&self) -> bool {
        self.lang == Lang::Ja
    }

    /// The page chrome: menu, language switch, who is signed in.
    pub fn chrome(&self, title_ja: &'static str, title_en: &'static str) -> Chrome {
        let ja = self.ja();
        let pick = |j: &'static str, e: &'static str| if ja { j } else { e };
        let mut nav = vec![NavItem { href: "/console/", label: pick("ホーム", "Home"), current: false }];
        if self.rights.clinical {
            nav.push(NavItem { href: "/console/patients", label: pick("患者検索", "Patients"), current: false });
            nav.push(NavItem {
                href: "/console/approvals",
                label: pick("代行入力の承認", "Approvals"),
                current: false,
            });
        }
        if self.rights.read_audit {
            nav.push(NavItem { href: "/console/audit", label: pick("監査証跡", "Audit trail"), current: false });
            nav.push(NavItem {
                href: "/console/explain",
                label: pick("アクセス判定の説明", "Explain a decision"),
                current: false,
            });
        }
        if self.rights.review_break_glass {
            nav.push(NavItem {
                href: "/console/break-glass",
                label: pick("非常時アクセスのレビュー", "Break-glass reviews"),
                current: false,
            });
        }
        if self.rights.review_access {
            nav.push(NavItem {
                href: "/console/reviews",
                label: pick("アクセス権の見直し", "Access reviews"),
                current: false,
            });
        }
        if self.rights.read_audit {
            nav.push(NavItem {
                href: "/console/integrity",
                label: pick("構成の整合性", "Configuration integrity"),
                current: false,
            });
        }
        if self.rights.approve_change || self.rights.read_audit {
            nav.push(NavItem {
                href: "/console/changes",
                label: pick("変更の承認", "Change approvals"),
                current: false,
            });
        }
        if self.rights.read_audit || self.rights.emergency_mode {
            nav.push(NavItem {
                href: "/console/backups", label: pick("バックアップ", "Backups"), current: false
            });
        }
        if self.rights.manage_users {
            nav.push(NavItem { href: "/console/users", label: pick("利用者", "Users"), current: false });
        }
        if self.rights.manage_clients {
            nav.push(NavItem {
                href: "/console/apps",
                label: pick("アプリケーション", "Applications"),
                current: false,
            });
        }
        if self.rights.set_policies {
            nav.push(NavItem {
                href: "/console/policies",
                label: pick("アクセス方針", "Access policies"),
                current: false,
            });
        }
        if self.rights.set_class_rules {
            nav.push(NavItem {
                href: "/console/class-rules",
                label: pick("情報区分の規則", "Class rules"),
                current: false,
            });
        }
        if self.rights.rotate_keys {
            nav.push(NavItem { href: "/console/keys", label: pick("署名鍵", "Signing keys"), current: false });
        }
        if self.rights.vendor || self.rights.request_maintenance || self.rights.approve_maintenance {
            nav.push(NavItem {
                href: "/console/maintenance", label: pick("保守作業", "Maintenance"), current: false
            });
        }
        let here = format!("/console{}", self.path);
        // The longest matching prefix is the current entry.
        if let Some(best) = nav
            .iter()
            .enumerate()
            .filter(|(_, n)| here == n.href || (n.href != "/console/" && here.starts_with(n.href)))
            .max_by_key(|(_, n)| n.href.len())
            .map(|(i, _)| i)
            .or_else(|| (here == "/console/" || here == "/console").then_some(0))
            && let Some(n) = nav.get_mut(best)
        {
            n.current = true;
        }
        Chrome {
            ja,
            title: pick(title_ja, title_en),
            user: self.ctx.name().to_string(),
            csrf: self.csrf.clone(),
            nav,
            switch_href: if ja { "?lang=en" } else { "?lang=ja" },
            switch_label: if ja { "English" } else { "日本語" },
            switch_lang: if ja { "en" } else { "ja" },
            read_only: self.read_only,
            backups_link: self.rights.read_audit || self.rights.emergency_mode,
        }
    }
}

/// The frame of every page (`base.html`).
pub struct Chrome {
    pub ja: bool,
    pub title: &'static str,
    pub user: String,
    pub csrf: String,
    pub nav: Vec<NavItem>,
    pub switch_href: &'static str,
    pub switch_label: &'static str,
    pub switch_lang: &'static str,
    /// Emergency read-only mode is on: a banner on every page.
    pub read_only: bool,
    /// The banner links to the backups page (for those who may see it).
    pub backups_link: bool,
}

impl Chrome {
    /// A text in the page's language.
    pub fn t<'a>(&self, ja: &'a str, en: &'a str) -> &'a str {
        if self.ja { ja } else { en }
    }

    /// The page's language tag.
    pub fn lang(&self) -> &'static str {
        if self.ja { "ja" } else { "en" }
    }
}

/// The reader's language: `?lang=` (remembered in a cookie), the cookie, then the browser's
/// `Accept-Language` (its first of `ja`/`en`), then Japanese.
pub fn language(query: Option<&str>, headers: &HeaderMap) -> (Lang, bool) {
    let chosen = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "lang").map(|(_, v)| v.into_owned())
    });
    if let Some(l) = chosen.as_deref().and_then(tag) {
        return (l, true);
    }
    if let Some(l) = browser::cookie(headers, "mamori_lang").as_deref().and_then(tag) {
        return (l, false);
    }
    (browser::accepted_language(headers).and_then(tag).unwrap_or(Lang::Ja), false)
}

/// `ja`, `ja-JP` → Japanese; `en`, `en-US` → English; anything else: not a choice.
fn tag(t: &str) -> Option<Lang> {
    let primary = t.split(['-', '_']).next().unwrap_or("").to_ascii_lowercase();
    match primary.as_str() {
        "ja" => Some(Lang::Ja),
        "en" => Some(Lang::En),
        _ => None,
    }
}

impl FromRequestParts<Arc<Console>> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, c: &Arc<Console>) -> Result<Self, Response> {
        let original = parts.extensions.get::<OriginalUri>().map(|u| u.0.clone()).unwrap_or_else(|| parts.uri.clone());
        let next = original.path_and_query().map_or("/console/", |p| p.as_str()).to_string();
        let (lang, chosen) = language(original.query(), &parts.headers);
        let session = match browser::signed_in(&c.http, &parts.headers, &next).await {
            Ok(s) => s,
            Err(NotSignedIn::SignIn(r)) => return Err(r),
            Err(NotSignedIn::Unavailable) => return Err(crate::pages::unavailable(lang == Lang::Ja)),
        };
        let source = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ci| ci.0.ip().to_string());
        let request_id = parts.extensions.get::<mamori_http::RequestId>().map(|r| r.0.clone());
        let node = c.node.clone();
        let username = session.username.clone();
        let r = tokio::task::spawn_blocking(move || {
            let ctx = Ctx::person(&node, &username, source, request_id)?;
            let roles = match &ctx.caller {
                mamori_app::Caller::Person { roles, .. } => roles.clone(),
                mamori_app::Caller::Operator(_) | mamori_app::Caller::Application(_) => Vec::new(),
            };
            let (request_maintenance, approve_maintenance) = crate::pages::maintenance::in_menu(&ctx, &node);
            let rights = Rights {
                read_audit: ctx.may(&node, AdminAct::ReadAudit),
                manage_users: ctx.may(&node, AdminAct::ManageUsers),
                manage_clients: ctx.may(&node, AdminAct::ManageClients),
                set_policies: ctx.may(&node, AdminAct::SetPolicies),
                set_class_rules: ctx.may(&node, AdminAct::SetClassRules),
                rotate_keys: ctx.may(&node, AdminAct::RotateKeys),
                review_break_glass: ctx.may(&node, AdminAct::ReviewBreakGlass),
                review_access: ctx.may(&node, AdminAct::ReviewAccess),
                approve_change: ctx.may(&node, AdminAct::ApproveChange),
                emergency_mode: ctx.may(&node, AdminAct::EmergencyMode),
                vendor: roles.iter().any(|r| r == "maintenance_vendor"),
                request_maintenance,
                approve_maintenance,
                clinical: mamori_app::clinical::may_use(&ctx, &node),
                break_glass: mamori_app::clinical::may_break_glass(&ctx, &node),
            };
            Ok::<_, mamori_app::AppError>((ctx, rights))
        })
        .await;
        let (ctx, rights) = match r {
            Ok(Ok(x)) => x,
            // An account no longer active: as signed out.
            Ok(Err(mamori_app::AppError::Forbidden(_))) => {
                return Err(browser::redirect("/login?next=/console/", vec![browser::clear_session(&c.http)]));
            }
            _ => return Err(crate::pages::unavailable(lang == Lang::Ja)),
        };
        let mut cookies = Vec::new();
        if chosen {
            cookies.push(browser::language_cookie(&c.http, if lang == Lang::Ja { "ja" } else { "en" }));
        }
        Ok(Visitor {
            ctx,
            lang,
            csrf: browser::csrf_token(&c.http, &parts.headers),
            rights,
            path: parts.uri.path().to_string(),
            cookies,
            read_only: c.node.records.is_read_only(),
        })
    }
}
