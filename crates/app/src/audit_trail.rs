//! The audit trail as a whole (監査証跡): exporting it is itself an audited act.

use crate::{AdminAct, AppError, Ctx, Node};

/// Asks whether the caller may export the trail; call before taking any entry.
pub fn may_export(ctx: &Ctx, node: &Node) -> Result<(), AppError> {
    ctx.authorize(node, AdminAct::ReadAudit)
}

/// Records an export of the trail — which entries went where — as the trail's own entry.
pub fn exported(ctx: &Ctx, node: &Node, detail: String) -> Result<(), AppError> {
    let mut entry =
        mamori_audit::AuditRecord::new("audit-export", ctx.audit_actor(), mamori_audit::Outcome::Success, "HOPERAT");
    entry.detail = Some(detail);
    entry.request_id = ctx.request_id.clone();
    entry.source = ctx.source.clone();
    node.store
        .append(vec![entry])
        .map(|_| ())
        .map_err(|e| AppError::Failed(format!("the export's own audit entry: {e}")))
}
