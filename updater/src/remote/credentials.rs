//! Where the S3 credentials come from (DESIGN §6: secrets never in the Nix
//! store; a 0600 file on the rw partition, systemd credentials, or the
//! standard AWS chain).

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use aws_credential_types::Credentials;
use serde::Deserialize;

use super::RemoteError;

/// How requests are authenticated.
///
/// In TOML: `credentials = "chain"`, `credentials = "anonymous"` or
/// `credentials = { file = "/var/lib/abnix/s3-credentials" }`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum CredentialSource {
    /// A TOML file with `access_key_id`, `secret_access_key` and optionally
    /// `session_token`; a regular file with mode 0600 or stricter.
    File(PathBuf),
    /// aws-config's default chain: environment variables, profile files,
    /// web identity, ECS and EC2 instance metadata.
    #[default]
    Chain,
    /// Unsigned requests, for public buckets.
    Anonymous,
}

/// Static keys read from a credentials file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

// Keeps secrets out of logs and error messages.
impl fmt::Debug for CredentialsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialsFile")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Reads static credentials from `path`, refusing a file that others can
/// read or that is not a regular file.
pub(crate) fn read_credentials_file(path: &Path) -> Result<Credentials, RemoteError> {
    let refuse = |what: String| RemoteError::Credentials(format!("{}: {what}", path.display()));
    let mut file = File::open(path).map_err(|e| refuse(format!("cannot open: {e}")))?;
    // Checked on the open file, not the path, so the file checked is the file read.
    let metadata = file
        .metadata()
        .map_err(|e| refuse(format!("cannot stat: {e}")))?;
    if !metadata.is_file() {
        return Err(refuse("not a regular file".into()));
    }
    // Owner-only modes pass, including systemd's LoadCredential= files,
    // which are 0400 (systemd src/core/exec-credential.c, write_credential).
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(refuse(format!(
            "mode {mode:04o} lets others read it; must be 0600 or stricter"
        )));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| refuse(format!("cannot read: {e}")))?;
    parse_credentials(&text).map_err(refuse)
}

/// Parses the TOML of a credentials file. Errors carry the line but never
/// the offending text, which may be a secret.
fn parse_credentials(text: &str) -> Result<Credentials, String> {
    let parsed: CredentialsFile = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|span| text[..span.start].matches('\n').count() + 1);
        match line {
            Some(line) => format!("line {line}: {}", e.message()),
            None => e.message().to_string(),
        }
    })?;
    if parsed.access_key_id.is_empty() {
        return Err("access_key_id is empty".into());
    }
    if parsed.secret_access_key.is_empty() {
        return Err("secret_access_key is empty".into());
    }
    Ok(Credentials::new(
        parsed.access_key_id,
        parsed.secret_access_key,
        parsed.session_token.filter(|token| !token.is_empty()),
        None,
        "abnix-credentials-file",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn parses_keys_and_optional_token() {
        let creds = parse_credentials(
            "access_key_id = \"AK\"\nsecret_access_key = \"SK\"\nsession_token = \"TOK\"\n",
        )
        .unwrap();
        assert_eq!(creds.access_key_id(), "AK");
        assert_eq!(creds.secret_access_key(), "SK");
        assert_eq!(creds.session_token(), Some("TOK"));

        let creds =
            parse_credentials("access_key_id = \"AK\"\nsecret_access_key = \"SK\"\n").unwrap();
        assert_eq!(creds.session_token(), None);
    }

    #[test]
    fn rejects_unknown_keys_naming_them() {
        let err = parse_credentials(
            "access_key_id = \"AK\"\nsecret_access_key = \"SK\"\nregion = \"x\"\n",
        )
        .unwrap_err();
        assert!(err.starts_with("line 3: unknown field `region`"), "{err}");
    }

    #[test]
    fn rejects_missing_and_empty_keys() {
        let err = parse_credentials("access_key_id = \"AK\"\n").unwrap_err();
        assert!(err.contains("missing field `secret_access_key`"), "{err}");
        let err =
            parse_credentials("access_key_id = \"\"\nsecret_access_key = \"SK\"\n").unwrap_err();
        assert_eq!(err, "access_key_id is empty");
    }

    #[test]
    fn errors_do_not_echo_secrets() {
        let err = parse_credentials("access_key_id = \"AK\"\nsecret_access_key = 'hunter2\n")
            .unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    fn write_with_mode(dir: &Path, mode: u32) -> PathBuf {
        let path = dir.join("creds.toml");
        fs::write(
            &path,
            "access_key_id = \"AK\"\nsecret_access_key = \"SK\"\n",
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn file_with_mode_0600_or_0400_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o400] {
            let creds = read_credentials_file(&write_with_mode(dir.path(), mode)).unwrap();
            assert_eq!(creds.access_key_id(), "AK");
        }
    }

    #[test]
    fn file_readable_by_others_is_refused_naming_path_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604] {
            let path = write_with_mode(dir.path(), mode);
            let err = read_credentials_file(&path).unwrap_err();
            let RemoteError::Credentials(message) = &err else {
                panic!("expected Credentials, got {err:?}")
            };
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains(&format!("mode {mode:04o}")), "{message}");
        }
    }

    #[test]
    fn directory_and_missing_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let err = read_credentials_file(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = read_credentials_file(&dir.path().join("absent")).unwrap_err();
        assert!(err.to_string().contains("cannot open"), "{err}");
    }

    #[test]
    fn source_from_toml() {
        #[derive(Deserialize)]
        struct Wrapper {
            credentials: CredentialSource,
        }
        let parse = |s: &str| toml::from_str::<Wrapper>(s).map(|w| w.credentials);
        assert_eq!(
            parse("credentials = \"chain\"").unwrap(),
            CredentialSource::Chain
        );
        assert_eq!(
            parse("credentials = \"anonymous\"").unwrap(),
            CredentialSource::Anonymous
        );
        assert_eq!(
            parse("credentials = { file = \"/var/lib/abnix/s3\" }").unwrap(),
            CredentialSource::File("/var/lib/abnix/s3".into())
        );
        assert!(parse("credentials = \"env\"").is_err());
    }
}
