//! Errors as people read them: one line, each cause once.

/// An error and its causes on one line, each said once. Many errors here
/// put their source in their own message, which `{:#}` would repeat.
pub fn error_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[test]
    fn error_text_says_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading {path}: {source}")]
        struct Read {
            path: &'static str,
            source: std::io::Error,
        }
        let read = Read {
            path: "/etc/abnix/config.toml",
            source: std::io::Error::other("no such file"),
        };
        let err = anyhow::Error::new(read).context("loading the config");
        assert_eq!(
            error_text(err.as_ref()),
            "loading the config: reading /etc/abnix/config.toml: no such file"
        );
    }

    #[test]
    fn a_source_not_quoted_by_its_context_is_added() {
        #[derive(Debug, thiserror::Error)]
        #[error("opening y")]
        struct Wraps(#[source] std::io::Error);
        let err =
            anyhow::Error::new(Wraps(std::io::Error::other("disk on fire"))).context("fetching");
        assert_eq!(
            error_text(err.as_ref()),
            "fetching: opening y: disk on fire"
        );
    }
}
