//! The credential sources against a real S3 server: the systemd credential,
//! the AWS profile files, the 0600 rule on each, and which source wins when
//! several hold keys. The tests change the process environment, so they
//! take turns (`ENV`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use abnix_testkit::{credentials_file, S3Server};
use abnix_updater::remote::{
    CredentialSource, Remote, RemoteConfig, RemoteError, RetryPolicy, Timeouts, TransferLimits,
    SYSTEMD_CREDENTIAL,
};
use tempfile::TempDir;

static ENV: Mutex<()> = Mutex::new(());

/// Every variable a source reads, so each test starts from none.
const VARS: [&str; 8] = [
    "CREDENTIALS_DIRECTORY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_EC2_METADATA_DISABLED",
];

/// The environment lock, with no credentials in the environment and an
/// empty home directory.
fn clean_env() -> (std::sync::MutexGuard<'static, ()>, TempDir) {
    let guard = ENV.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for var in VARS {
        std::env::remove_var(var);
    }
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let home = tempfile::tempdir().unwrap();
    std::env::set_var("HOME", home.path());
    (guard, home)
}

fn config(server: &S3Server, credentials: CredentialSource) -> RemoteConfig {
    RemoteConfig {
        endpoint: Some(server.endpoint()),
        region: "us-east-1".into(),
        bucket: server.bucket().into(),
        prefix: String::new(),
        channel: "stable".into(),
        path_style: true,
        credentials,
        retry: RetryPolicy {
            max_attempts: 1,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            max_total: Duration::from_secs(20),
        },
        timeouts: Timeouts::default(),
        limits: TransferLimits::default(),
    }
}

fn write_private(path: &Path, text: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// An AWS shared-credentials profile section.
fn section(header: &str, key: &str, secret: &str) -> String {
    format!("[{header}]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n")
}

/// A profile section with `server`'s keys.
fn good(header: &str, server: &S3Server) -> String {
    section(header, server.access_key(), server.secret_key())
}

/// A profile section with keys the server does not know.
fn bad(header: &str) -> String {
    section(header, "AKIDWRONG", "wrong-secret")
}

/// The remote works: a signed PUT and GET go through.
fn round_trip(server: &S3Server, source: CredentialSource) {
    let remote =
        Remote::new(config(server, source.clone())).unwrap_or_else(|e| panic!("{source:?}: {e}"));
    remote
        .put_bytes("stable.meta", format!("{source:?}").as_bytes())
        .unwrap_or_else(|e| panic!("{source:?}: {e}"));
    assert_eq!(
        remote.get_bytes("stable.meta", 1000).unwrap(),
        format!("{source:?}").as_bytes()
    );
}

/// Loading the source fails at `Remote::new` with an error containing
/// `expected`.
fn refused(server: &S3Server, source: CredentialSource, expected: &str) {
    match Remote::new(config(server, source.clone())) {
        Err(RemoteError::Credentials(message)) => {
            assert!(message.contains(expected), "{source:?}: {message}")
        }
        Err(other) => panic!("{source:?}: expected a credentials error, got {other}"),
        Ok(_) => panic!("{source:?}: accepted"),
    }
}

fn systemd(profile: Option<&str>) -> CredentialSource {
    CredentialSource::Systemd {
        profile: profile.map(Into::into),
    }
}

fn profile(profile: Option<&str>) -> CredentialSource {
    CredentialSource::Profile {
        profile: profile.map(Into::into),
    }
}

#[test]
fn systemd_credential_signs_requests_with_its_profile() {
    let (_env, _home) = clean_env();
    let server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let credential = dir.path().join(SYSTEMD_CREDENTIAL);
    // systemd writes credentials with mode 0400.
    write_private(&credential, &good("default", &server), 0o400);

    refused(&server, systemd(None), "$CREDENTIALS_DIRECTORY is not set");
    for relative in ["", "credentials"] {
        std::env::set_var("CREDENTIALS_DIRECTORY", relative);
        refused(&server, systemd(None), "is not an absolute path");
    }
    std::env::set_var("CREDENTIALS_DIRECTORY", dir.path());
    round_trip(&server, systemd(None));

    write_private(
        &credential,
        &format!("{}{}", bad("default"), good("fleet", &server)),
        0o400,
    );
    round_trip(&server, systemd(Some("fleet")));
    std::env::set_var("AWS_PROFILE", "fleet");
    round_trip(&server, systemd(None));

    fs::remove_file(&credential).unwrap();
    refused(
        &server,
        systemd(None),
        &format!("{}: no such file", credential.display()),
    );
}

#[test]
fn aws_profile_files_sign_requests() {
    let (_env, home) = clean_env();
    let server = S3Server::start();
    let aws = home.path().join(".aws");

    // The credentials file alone, the profile named.
    write_private(
        &aws.join("credentials"),
        &format!("{}{}", bad("default"), good("fleet", &server)),
        0o600,
    );
    round_trip(&server, profile(Some("fleet")));

    // A profile of the config file alone (`[profile NAME]`).
    write_private(&aws.join("config"), &good("profile cfg", &server), 0o600);
    round_trip(&server, profile(Some("cfg")));

    // The files the AWS tools' variables name instead of ~/.aws.
    let elsewhere = tempfile::tempdir().unwrap();
    let credentials = elsewhere.path().join("creds");
    write_private(&credentials, &good("default", &server), 0o600);
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &credentials);
    std::env::set_var("AWS_CONFIG_FILE", elsewhere.path().join("absent"));
    round_trip(&server, profile(None));

    // Neither file there.
    fs::remove_file(&credentials).unwrap();
    refused(&server, profile(None), "no such file");

    // A profile that is in neither file fails at the first request.
    write_private(&credentials, &good("default", &server), 0o600);
    let remote = Remote::new(config(&server, profile(Some("nobody")))).unwrap();
    let err = remote.get_bytes("stable.meta", 100).unwrap_err();
    assert!(
        matches!(&err, RemoteError::Credentials(m) if m.contains("nobody")),
        "{err:?}"
    );
}

/// Every file-based source refuses a file that group or others can read,
/// naming it, before any request.
#[test]
fn every_credentials_file_must_be_private() {
    let (_env, home) = clean_env();
    let server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();

    let abnix_file = credentials_file(dir.path(), &server);
    let credential = dir.path().join(SYSTEMD_CREDENTIAL);
    write_private(&credential, &good("default", &server), 0o400);
    std::env::set_var("CREDENTIALS_DIRECTORY", dir.path());
    let aws = home.path().join(".aws");
    write_private(&aws.join("credentials"), &good("default", &server), 0o600);
    write_private(
        &aws.join("config"),
        "[default]\nregion = us-east-1\n",
        0o600,
    );

    let sources = [
        (&abnix_file, CredentialSource::File(abnix_file.clone())),
        (&credential, systemd(None)),
        (&aws.join("credentials"), profile(None)),
        (&aws.join("config"), profile(None)),
    ];
    for (file, source) in &sources {
        round_trip(&server, source.clone());
        for mode in [0o640, 0o604] {
            fs::set_permissions(file, fs::Permissions::from_mode(mode)).unwrap();
            refused(
                &server,
                source.clone(),
                &format!("{}: mode {mode:04o} lets others read it", file.display()),
            );
        }
        fs::set_permissions(file, fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// Only the configured source counts: keys elsewhere (the environment,
/// ~/.aws, a systemd credential) neither replace nor rescue it.
#[test]
fn the_configured_source_wins_over_keys_elsewhere() {
    let (_env, home) = clean_env();
    let server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let abnix_file = credentials_file(dir.path(), &server);
    let credential = dir.path().join(SYSTEMD_CREDENTIAL);
    std::env::set_var("CREDENTIALS_DIRECTORY", dir.path());
    let aws_credentials = home.path().join(".aws/credentials");

    // Wrong keys everywhere else, right ones in the configured source.
    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDWRONG");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "wrong-secret");
    write_private(&aws_credentials, &bad("default"), 0o600);
    write_private(&credential, &good("default", &server), 0o400);
    round_trip(&server, systemd(None));
    round_trip(&server, CredentialSource::File(abnix_file.clone()));

    write_private(&credential, &bad("default"), 0o400);
    write_private(&aws_credentials, &good("default", &server), 0o600);
    round_trip(&server, profile(None));

    // And the wrong keys are really refused: nothing falls back, with the
    // right keys in the environment and in ~/.aws alike.
    std::env::set_var("AWS_ACCESS_KEY_ID", server.access_key());
    std::env::set_var("AWS_SECRET_ACCESS_KEY", server.secret_key());
    let remote = Remote::new(config(&server, systemd(None))).unwrap();
    let err = remote.get_bytes("stable.meta", 100).unwrap_err();
    assert!(matches!(err, RemoteError::AccessDenied { .. }), "{err:?}");
    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDWRONG");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "wrong-secret");

    // The chain takes the environment before the profile files.
    let remote = Remote::new(config(&server, CredentialSource::Chain)).unwrap();
    let err = remote.get_bytes("stable.meta", 100).unwrap_err();
    assert!(matches!(err, RemoteError::AccessDenied { .. }), "{err:?}");
    std::env::set_var("AWS_ACCESS_KEY_ID", server.access_key());
    std::env::set_var("AWS_SECRET_ACCESS_KEY", server.secret_key());
    write_private(&aws_credentials, &bad("default"), 0o600);
    round_trip(&server, CredentialSource::Chain);
}
