//! Records at the end of their retention period (保存期間): purge, and the integrity check of
//! every stored version.

use mamori_records::{FsckReport, ResourceId, ResourceType};

use crate::{AdminAct, AppError, Ctx, Node};

/// Removes every version of a deleted record whose retention period has passed (the record
/// service refuses otherwise); returns how many versions were removed. Audited.
pub fn purge(ctx: &Ctx, node: &Node, reference: &str) -> Result<u64, AppError> {
    ctx.authorize(node, AdminAct::Purge)?;
    let (t, i) = reference.split_once('/').ok_or_else(|| AppError::Invalid(format!("`{reference}` is not Type/id")))?;
    let rt = ResourceType::parse(t).map_err(|e| AppError::Invalid(e.to_string()))?;
    let id = ResourceId::parse(i).map_err(|e| AppError::Invalid(e.to_string()))?;
    Ok(node.records.purge(&ctx.records(node), &rt, &id)?)
}

/// Recomputes the hash of every stored version, telling `progress` the count checked so far.
pub fn fsck(ctx: &Ctx, node: &Node, progress: &mut dyn FnMut(u64)) -> Result<FsckReport, AppError> {
    ctx.authorize(node, AdminAct::ReadAudit)?;
    Ok(node.records.fsck_with(progress)?)
}
