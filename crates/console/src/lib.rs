//! The web console (O3, issue #24): server-rendered pages at `/console/` for the people the
//! guideline names — the security manager (安全管理責任者), the system administrator
//! (システム管理者), clinicians and vendors — in Japanese first, English available.
//!
//! The console decides nothing and audits nothing by itself. Every page calls the application
//! layer's use case (`mamori-app`) with the signed-in person's [`mamori_app::Ctx`], exactly as
//! the command line does with the operator's: the use case asks the enforcement point and leaves
//! the audit entry. Sessions, CSRF tokens and the security headers are the sign-in pages' own
//! (`mamori_http::browser`). Navigation follows the person's rights: a page they may not use is
//! absent from the menu, and asking for it by URL is refused (and audited) by its use case.
//!
//! Reading works without JavaScript; there is none. Nothing is changed by a GET.

mod api;
mod fmt;
mod maintenance_api;
pub use api::integrity_api;
pub use maintenance_api::maintenance_api;
mod pages;
mod visitor;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use mamori_app::Node;
use mamori_http::AppState;

pub use fmt::{era_date, local_time};

/// What every page needs: the HTTP edge's state (sessions, CSRF, settings) and the node the use
/// cases run on.
pub struct Console {
    pub(crate) http: AppState,
    pub(crate) node: Arc<Node>,
}

/// The console's router, to be served at `/console` ([`mamori_http::app_with_console`]).
pub fn router(http: AppState, node: Arc<Node>) -> Router {
    let state = Arc::new(Console { http, node });
    Router::new()
        .route("/", get(pages::dashboard::page))
        .route("/console.css", get(pages::stylesheet))
        .route("/audit", get(pages::audit::search))
        .route("/audit/verify", post(pages::audit::verify))
        .route("/audit/{index}", get(pages::audit::entry))
        .route("/explain", get(pages::audit::explain))
        .route("/break-glass", get(pages::reviews::break_glass))
        .route("/break-glass/{grant}/close", post(pages::reviews::close_break_glass))
        .route("/reviews", get(pages::access_reviews::list).post(pages::access_reviews::open))
        .route("/reviews/{id}", get(pages::access_reviews::show))
        .route("/reviews/{id}/{user}", post(pages::access_reviews::decide))
        .route("/users", get(pages::users::list).post(pages::users::issue))
        .route("/users/{username}", get(pages::users::show))
        .route("/users/{username}/{act}", post(pages::users::act))
        .route("/apps", get(pages::apps::list).post(pages::apps::register))
        .route("/apps/{id}", get(pages::apps::show))
        .route("/apps/{id}/{act}", post(pages::apps::act))
        .route("/policies", get(pages::policies::show).post(pages::policies::submit))
        .route("/class-rules", get(pages::policies::show_rules).post(pages::policies::submit_rules))
        .route("/keys", get(pages::keys::list).post(pages::keys::rotate))
        .route("/backups", get(pages::backups::show))
        .route("/backups/emergency", post(pages::backups::switch))
        .route("/patients", get(pages::clinical::patients))
        .route("/patients/{id}", get(pages::clinical::patient))
        .route("/patients/{id}/break-glass", get(pages::clinical::break_glass_form).post(pages::clinical::break_glass))
        .route("/records/{rtype}/{id}", get(pages::clinical::record))
        .route("/approvals", get(pages::clinical::approvals))
        .route("/approvals/{rtype}/{id}", post(pages::clinical::approve))
        .route("/integrity", get(pages::integrity::show).post(pages::integrity::act))
        .route("/changes", get(pages::changes::list))
        .route("/changes/{id}", get(pages::changes::show).post(pages::changes::decide))
        .route("/maintenance", get(pages::maintenance::list).post(pages::maintenance::file))
        .route("/maintenance/new", get(pages::maintenance::new))
        .route("/maintenance/register", get(pages::maintenance::register).post(pages::maintenance::set_register))
        .route("/maintenance/{id}", get(pages::maintenance::show))
        .route("/maintenance/{id}/document", get(pages::maintenance::document))
        .route("/maintenance/{id}/edit", get(pages::maintenance::edit))
        .route("/maintenance/{id}/{act}", post(pages::maintenance::act))
        .route("/signout", post(pages::sign_out))
        .fallback(pages::not_found)
        .with_state(state)
}
