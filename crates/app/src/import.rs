//! Bulk load of FHIR NDJSON (`mamori import`): every line goes through the record service's one
//! write path, judged as a write by the caller and audited.

use mamori_records::ndjson::Importer;

use crate::{AdminAct, AppError, Ctx, Node};

/// An importer writing as the caller, `batch` resources per transaction. Feed it lines, then
/// flush; its counts and refusals say what went in.
pub fn importer(ctx: &Ctx, node: &Node, batch: usize) -> Result<Importer, AppError> {
    ctx.authorize(node, AdminAct::Import)?;
    if batch == 0 {
        return Err(AppError::Invalid("the batch size must be at least 1".into()));
    }
    Ok(Importer::new(node.records.clone(), ctx.records(node), batch))
}
