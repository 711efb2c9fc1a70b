//! The command line's errors: any error, with its causes kept. A subcommand returns
//! [`Fallible`]; [`context`] puts what was being done in front of a cause without dropping it,
//! and [`report`] prints the whole chain (`mamori: cannot read …` then `  caused by: …`).

use std::error::Error;

/// Any error, with its `source()` chain.
pub type Failure = Box<dyn Error + Send + Sync + 'static>;

/// What a subcommand returns.
pub type Fallible<T> = Result<T, Failure>;

/// An error that says what was being done, over the error that stopped it.
#[derive(Debug)]
struct Context {
    what: String,
    cause: Failure,
}

impl std::fmt::Display for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

impl Error for Context {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.cause)
    }
}

/// For `map_err`: wraps an error under `what` (what was being done).
pub fn context<E: Into<Failure>>(what: impl Into<String>) -> impl FnOnce(E) -> Failure {
    let what = what.into();
    move |e| Box::new(Context { what, cause: e.into() })
}

/// The error and every cause under it, one per line, as the command line prints them.
pub fn report(e: &(dyn Error + 'static)) -> String {
    let mut out = format!("mamori: {e}");
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(&format!("\n  caused by: {c}"));
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_is_printed_whole() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied");
        let e = context("cannot read `mamori.toml`")(io);
        let e = context("cannot open the data directory")(e);
        assert_eq!(
            report(&*e),
            "mamori: cannot open the data directory\n  caused by: cannot read `mamori.toml`\n  caused by: permission denied"
        );
        let plain: Failure = "no such client".into();
        assert_eq!(report(&*plain), "mamori: no such client");
    }
}
