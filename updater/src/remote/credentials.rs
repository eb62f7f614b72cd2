//! Where the S3 credentials come from (DESIGN §6: secrets never in the Nix
//! store; a 0600 file on the rw partition, systemd credentials, the AWS
//! profile files, or the standard AWS chain).

use std::fmt;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_credential_types::Credentials;
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use aws_sdk_s3::config::Region;
use serde::Deserialize;

use super::RemoteError;

/// The systemd credential (`LoadCredential=`) that [`CredentialSource::Systemd`]
/// reads from `$CREDENTIALS_DIRECTORY`: an AWS shared credentials file.
pub const SYSTEMD_CREDENTIAL: &str = "abnix.aws-credentials";

/// How requests are authenticated. Exactly one source is used: the others
/// are not consulted, even when present (docs/cli.md, "Credentials").
///
/// In TOML: `credentials = "chain"`, `credentials = "anonymous"`,
/// `credentials = { file = "/var/lib/abnix/s3-credentials" }`,
/// `credentials = { systemd = { profile = "fleet" } }` or
/// `credentials = { profile = {} }`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum CredentialSource {
    /// abnix's own TOML file with `access_key_id`, `secret_access_key` and
    /// optionally `session_token`; a regular file with mode 0600 or
    /// stricter.
    File(PathBuf),
    /// The systemd credential [`SYSTEMD_CREDENTIAL`] in
    /// `$CREDENTIALS_DIRECTORY`, in the AWS shared credentials format, read
    /// with `profile` (or `$AWS_PROFILE`, or `default`).
    Systemd {
        #[serde(default)]
        profile: Option<String>,
    },
    /// The AWS shared credentials and config files (`~/.aws/credentials`,
    /// `~/.aws/config`, or `$AWS_SHARED_CREDENTIALS_FILE`,
    /// `$AWS_CONFIG_FILE`), read with `profile` (or `$AWS_PROFILE`, or
    /// `default`); each file mode 0600 or stricter.
    Profile {
        #[serde(default)]
        profile: Option<String>,
    },
    /// aws-config's default chain: environment variables, profile files,
    /// web identity, ECS and EC2 instance metadata.
    #[default]
    Chain,
    /// Unsigned requests, for public buckets.
    Anonymous,
}

/// The most bytes of a file of secrets that are read: a credentials file
/// holds a few keys, an AWS config file a few profiles.
pub(crate) const MAX_CREDENTIALS_BYTES: u64 = 64 * 1024;

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

/// Reads static credentials from abnix's own credentials file.
pub(crate) fn read_credentials_file(path: &Path) -> Result<Credentials, RemoteError> {
    let text = read_private_file(path)?.ok_or_else(|| {
        refuse(
            path,
            format!("cannot open: {}", std::io::Error::from(ErrorKind::NotFound)),
        )
    })?;
    parse_credentials(&text).map_err(|e| refuse(path, e))
}

fn refuse(path: &Path, what: String) -> RemoteError {
    RemoteError::Credentials(format!("{}: {what}", path.display()))
}

/// Reads a file that holds secrets, or `None` when it does not exist;
/// refuses one that others can read, that is not a regular file, or that
/// is larger than [`MAX_CREDENTIALS_BYTES`].
fn read_private_file(path: &Path) -> Result<Option<String>, RemoteError> {
    // Non-blocking: opening a FIFO for reading would otherwise wait for a
    // writer forever (fifo(7)); it is refused below as no regular file.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(refuse(path, format!("cannot open: {e}"))),
    };
    // Checked on the open file, not the path, so the file checked is the file read.
    let metadata = file
        .metadata()
        .map_err(|e| refuse(path, format!("cannot stat: {e}")))?;
    if !metadata.is_file() {
        return Err(refuse(path, "not a regular file".into()));
    }
    // Owner-only modes pass, including systemd's LoadCredential= files,
    // which are 0400 (systemd src/core/exec-credential.c, write_credential).
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(refuse(
            path,
            format!("mode {mode:04o} lets others read it; must be 0600 or stricter"),
        ));
    }
    if metadata.len() > MAX_CREDENTIALS_BYTES {
        return Err(refuse(
            path,
            format!(
                "{} bytes, more than a credentials file holds ({MAX_CREDENTIALS_BYTES})",
                metadata.len()
            ),
        ));
    }
    // Bounded again while reading: the file may grow after the stat.
    let mut text = String::new();
    file.take(MAX_CREDENTIALS_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| refuse(path, format!("cannot read: {e}")))?;
    if text.len() as u64 > MAX_CREDENTIALS_BYTES {
        return Err(refuse(
            path,
            format!("more than {MAX_CREDENTIALS_BYTES} bytes"),
        ));
    }
    Ok(Some(text))
}

/// The AWS profile files of a [`CredentialSource::Systemd`] or
/// [`CredentialSource::Profile`] source, read now (each through the 0600
/// check), handed to aws-config's profile provider as their contents.
pub(crate) fn profile_provider(
    source: &CredentialSource,
    region: &Region,
) -> Result<ProfileFileCredentialsProvider, RemoteError> {
    let (files, profile) = match source {
        CredentialSource::Systemd { profile } => {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                RemoteError::Credentials(format!(
                    "credentials = \"systemd\": $CREDENTIALS_DIRECTORY is not set \
                     (run by systemd with LoadCredential={SYSTEMD_CREDENTIAL})"
                ))
            })?;
            // Empty or relative, it would name a file in whatever directory
            // the command runs from.
            if !Path::new(&dir).is_absolute() {
                return Err(RemoteError::Credentials(format!(
                    "credentials = \"systemd\": $CREDENTIALS_DIRECTORY {dir:?} is not an \
                     absolute path"
                )));
            }
            let path = Path::new(&dir).join(SYSTEMD_CREDENTIAL);
            (vec![(EnvConfigFileKind::Credentials, path)], profile)
        }
        CredentialSource::Profile { profile } => (aws_profile_files()?, profile),
        other => unreachable!("{other:?} has no profile files"),
    };
    let mut builder = EnvConfigFiles::builder();
    let mut found = 0;
    for (kind, path) in &files {
        if let Some(text) = read_private_file(path)? {
            builder = builder.with_contents(*kind, text);
            found += 1;
        }
    }
    if found == 0 {
        let names: Vec<String> = files.iter().map(|(_, p)| p.display().to_string()).collect();
        return Err(RemoteError::Credentials(format!(
            "{}: no such file",
            names.join(" nor ")
        )));
    }
    let mut provider = ProfileFileCredentialsProvider::builder()
        .configure(&ProviderConfig::default().with_region(Some(region.clone())))
        .profile_files(builder.build());
    if let Some(profile) = profile {
        provider = provider.profile_name(profile);
    }
    Ok(provider.build())
}

/// Where the AWS tools look for the shared credentials and config files.
fn aws_profile_files() -> Result<Vec<(EnvConfigFileKind, PathBuf)>, RemoteError> {
    // $HOME, else the user's home from the password database, as the AWS CLI
    // (Python's expanduser) does: a system service has no $HOME.
    let home = std::env::home_dir().unwrap_or_default();
    let expand = |text: std::ffi::OsString| match text.to_str().and_then(|t| t.strip_prefix("~/")) {
        Some(rest) => home.join(rest),
        None => PathBuf::from(text),
    };
    let path = |var: &str, default: &str| match std::env::var_os(var) {
        Some(text) => Ok(expand(text)),
        None if home.as_os_str().is_empty() => Err(RemoteError::Credentials(format!(
            "no home directory to find {default} in, and ${var} is not set"
        ))),
        None => Ok(home.join(default)),
    };
    Ok(vec![
        (
            EnvConfigFileKind::Credentials,
            path("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials")?,
        ),
        (
            EnvConfigFileKind::Config,
            path("AWS_CONFIG_FILE", ".aws/config")?,
        ),
    ])
}

/// Parses the TOML of a credentials file. Errors carry the line but never
/// the offending text, which may be a secret.
fn parse_credentials(text: &str) -> Result<Credentials, String> {
    let parsed: CredentialsFile = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|span| text[..span.start].matches('\n').count() + 1);
        let message = without_value(e.message());
        match line {
            Some(line) => format!("line {line}: {message}"),
            None => message,
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

/// A TOML error's message without the value it may quote: serde's
/// "invalid type: integer `123456789`, expected a string" shows a secret
/// that happens to be a number. The parser's own (syntax) messages name
/// what it expected, never the text.
fn without_value(message: &str) -> String {
    match message.split_once(": ") {
        Some((kind @ ("invalid type" | "invalid value" | "invalid length"), rest)) => {
            let expected = rest
                .rsplit_once(", expected ")
                .map_or(String::new(), |(_, expected)| {
                    format!(", expected {expected}")
                });
            format!("{kind} (the value is not shown){expected}")
        }
        _ => message.to_owned(),
    }
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
        // A secret that parses as a number, a float, a date: serde's message
        // would quote it.
        for (value, secret) in [
            ("123456789", "123456789"),
            ("0xdeadbeef", "3735928559"),
            ("99999999999999999999999", "99999999999999999999999"),
            ("1.5e3", "1500"),
            ("1979-05-27", "1979"),
            ("[\"hunter2\"]", "hunter2"),
            ("hunter2", "hunter2"),
        ] {
            let err = parse_credentials(&format!(
                "access_key_id = \"AK\"\nsecret_access_key = {value}\n"
            ))
            .unwrap_err();
            assert!(err.starts_with("line 2: "), "{err}");
            assert!(!err.contains(secret), "{value}: {err}");
        }
        let err = parse_credentials("access_key_id = \"AK\"\nsecret_access_key = 123456789\n")
            .unwrap_err();
        assert_eq!(
            err,
            "line 2: invalid type (the value is not shown), expected a string"
        );
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.toml");
        let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let (sender, receiver) = std::sync::mpsc::channel();
        let reading = path.clone();
        std::thread::spawn(move || sender.send(read_credentials_file(&reading).map(|_| ())));
        // Not a timing of speed: without the fix the open never returns.
        let result = receiver
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the open of a FIFO waited for a writer");
        let err = result.unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn a_file_larger_than_a_credentials_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_with_mode(dir.path(), 0o600);
        // Valid TOML (keys and a comment) but too large.
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str(&format!(
            "# {}\n",
            "x".repeat(MAX_CREDENTIALS_BYTES as usize)
        ));
        fs::write(&path, text).unwrap();
        let err = read_credentials_file(&path).unwrap_err().to_string();
        assert!(err.contains("more than a credentials file holds"), "{err}");
        // At the bound it is read.
        let mut text = fs::read_to_string(write_with_mode(dir.path(), 0o600)).unwrap();
        let room = MAX_CREDENTIALS_BYTES as usize - text.len() - 3;
        text.push_str(&format!("# {}\n", "x".repeat(room)));
        assert_eq!(text.len() as u64, MAX_CREDENTIALS_BYTES);
        fs::write(&path, text).unwrap();
        assert_eq!(read_credentials_file(&path).unwrap().access_key_id(), "AK");
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
        assert_eq!(
            parse("credentials = { systemd = { profile = \"fleet\" } }").unwrap(),
            CredentialSource::Systemd {
                profile: Some("fleet".into())
            }
        );
        assert_eq!(
            parse("credentials = { profile = {} }").unwrap(),
            CredentialSource::Profile { profile: None }
        );
        assert!(parse("credentials = \"env\"").is_err());
    }
}
