//! Writing values into the shell files the fixture scripts source.

/// `value` as one single-quoted shell word: `it's` → `'it'\''s'`.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Fails the test unless busybox's shell parses `script` (`sh -n`), so a
/// syntax error shows up here rather than as a kernel panic in a guest.
#[cfg(test)]
pub fn assert_valid_shell(script: &str) {
    if let Some(error) = syntax_error(script) {
        panic!("sh -n: {error}");
    }
}

/// What `sh -n` says about `script`, if it does not parse.
#[cfg(test)]
fn syntax_error(script: &str) -> Option<String> {
    use std::io::Write;
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(script.as_bytes()).unwrap();
    let output = std::process::Command::new(crate::tree::BUSYBOX)
        .args(["sh", "-n"])
        .arg(file.path())
        .output()
        .expect("busybox is installed (apt-get install busybox-static)");
    (!output.status.success()).then(|| String::from_utf8_lossy(&output.stderr).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// The shell reads back exactly the quoted value, whatever it holds.
    #[test]
    fn quoted_values_round_trip_through_the_shell() {
        for value in ["plain", "", "it's", "a b  c", "$HOME `id` \"x\" \\n", "''"] {
            let output = Command::new(crate::tree::BUSYBOX)
                .args(["sh", "-c"])
                .arg(format!("printf %s {}", quote(value)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(output.stdout).unwrap(), value);
        }
    }

    #[test]
    fn syntax_errors_are_caught() {
        let error = syntax_error("if true; then\n").expect("an unfinished if is an error");
        assert!(error.contains("syntax error"), "{error}");
        assert_eq!(syntax_error("if true; then echo; fi\n"), None);
    }
}
