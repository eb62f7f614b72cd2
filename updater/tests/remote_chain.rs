//! `CredentialSource::Chain` against a real S3 server. Its own test binary
//! with a single test, because it changes the process environment.

use std::time::Duration;

use abnix_testkit::S3Server;
use abnix_updater::remote::{
    CredentialSource, Remote, RemoteConfig, RemoteError, RetryPolicy, Timeouts, TransferLimits,
};

fn config(server: &S3Server) -> RemoteConfig {
    RemoteConfig {
        endpoint: Some(server.endpoint()),
        region: "us-east-1".into(),
        bucket: server.bucket().into(),
        prefix: String::new(),
        channel: "stable".into(),
        path_style: true,
        credentials: CredentialSource::Chain,
        retry: RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            max_total: Duration::from_secs(20),
        },
        timeouts: Timeouts::default(),
        limits: TransferLimits::default(),
    }
}

#[test]
fn chain_reads_environment_and_reports_when_it_finds_nothing() {
    let server = S3Server::start();
    let home = tempfile::tempdir().unwrap();
    // An empty world for the chain: no profile files, no instance metadata.
    std::env::set_var("HOME", home.path());
    std::env::set_var("AWS_CONFIG_FILE", home.path().join("config"));
    std::env::set_var(
        "AWS_SHARED_CREDENTIALS_FILE",
        home.path().join("credentials"),
    );
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        std::env::remove_var(var);
    }

    let remote = Remote::new(config(&server)).unwrap();
    let err = remote.get_bytes("stable.meta", 100).unwrap_err();
    assert!(
        matches!(&err, RemoteError::Credentials(m) if m.contains("no credentials found in chain")),
        "{err:?}"
    );

    std::env::set_var("AWS_ACCESS_KEY_ID", server.access_key());
    std::env::set_var("AWS_SECRET_ACCESS_KEY", server.secret_key());
    let remote = Remote::new(config(&server)).unwrap();
    remote.put_bytes("stable.meta", b"from the chain").unwrap();
    assert_eq!(
        remote.get_bytes("stable.meta", 100).unwrap(),
        b"from the chain"
    );
}
