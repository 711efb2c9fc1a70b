//! Reading clinical records (診療録等) outside the API: the operator at the server's command line,
//! later a person in the console. The record service decides and audits each read exactly as it
//! does a read through the API — same guard, same entry — so the trail cannot tell the surfaces
//! apart except by who and from where.

use mamori_records::{ResourceId, ResourceType, VersionRecord};

use crate::{AppError, Ctx, Node};

/// A record reference as the command line takes it: `Type/id` or `Type/id/_history/n`.
pub fn parse_reference(reference: &str) -> Result<(ResourceType, ResourceId, Option<u64>), AppError> {
    let bad = || AppError::Invalid(format!("`{}` is not Type/id or Type/id/_history/n", clip(reference)));
    let mut parts = reference.trim().split('/');
    let (Some(t), Some(i)) = (parts.next(), parts.next()) else { return Err(bad()) };
    let version = match (parts.next(), parts.next(), parts.next()) {
        (None, None, None) => None,
        (Some("_history"), Some(n), None) => Some(n.parse::<u64>().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    let rt = ResourceType::parse(t).map_err(|e| AppError::Invalid(e.to_string()))?;
    let id = ResourceId::parse(i).map_err(|e| AppError::Invalid(e.to_string()))?;
    Ok((rt, id, version))
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Reads one record — its newest version, or the version the reference names — as `ctx`'s
/// caller: a person by their own rights (a hidden record is "not found", as through the API),
/// the operator allowed. Audited by the record service before the record is returned.
pub fn read(ctx: &Ctx, node: &Node, reference: &str) -> Result<VersionRecord, AppError> {
    let (rt, id, version) = parse_reference(reference)?;
    let rctx = ctx.records(node);
    let found = match version {
        None => node.records.read(&rctx, &rt, &id).wait(),
        Some(n) => node.records.vread(&rctx, &rt, &id, n).wait(),
    };
    Ok(found?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_parsed_strictly() {
        assert!(matches!(parse_reference("Patient/p1"), Ok((_, _, None))));
        assert!(matches!(parse_reference("Patient/p1/_history/2"), Ok((_, _, Some(2)))));
        for bad in [
            "",
            "Patient",
            "Patient/",
            "Patient/p1/_history",
            "Patient/p1/_history/x",
            "Patient/p1/x/2",
            "patient/p1",
            "Patient/p1/_history/1/2",
            "Patient/a b",
        ] {
            assert!(matches!(parse_reference(bad), Err(AppError::Invalid(_))), "{bad}");
        }
    }
}
