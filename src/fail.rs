//! The command line's errors: any error, with its causes kept. A subcommand returns
//! [`Fallible`]; [`context`] puts what was being done in front of a cause without dropping it,
//! and [`report`] prints the whole chain (`mamori: cannot read …` then `  caused by: …`).

use std::error::Error;

use mamori_app::messages::{Lang, caused_by, localize};

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

/// The error and every cause under it, one per line, as the command line prints them, in the
/// reader's language (`mamori_app::messages`: Japanese where the locale says `ja`).
pub fn report(e: &(dyn Error + 'static), lang: Lang) -> String {
    let mut out = format!("mamori: {}", localize(&e.to_string(), lang));
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(&format!("\n  {}: {}", caused_by(lang), localize(&c.to_string(), lang)));
        cause = c.source();
    }
    out
}

/// Whether `e` is a change held for a second person's approval (the two-person rule): the
/// command line says so and exits 3 rather than reporting a failure.
pub fn pending(e: &(dyn Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if matches!(c.downcast_ref::<mamori_app::AppError>(), Some(mamori_app::AppError::Pending(_))) {
            return true;
        }
        cur = c.source();
    }
    false
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
            report(&*e, Lang::En),
            "mamori: cannot open the data directory\n  caused by: cannot read `mamori.toml`\n  caused by: permission denied"
        );
        // In Japanese: every line the catalogue knows; the operating system's words as they come.
        assert_eq!(
            report(&*e, Lang::Ja),
            "mamori: データディレクトリを開けません\n  原因: `mamori.toml` を読み込めません\n  原因: permission denied"
        );
        let plain: Failure = "no such client".into();
        assert_eq!(report(&*plain, Lang::En), "mamori: no such client");
    }
}
