//! publish and fetch through the real binary against a real S3 server
//! (s3s-fs): keygen → pack → publish → fetch, a corrupted object, the
//! anti-rollback refusal, pruning, and the REMOTE flags and config file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use abnix_formats::sign::{PublicKey, TrustedKeys};
use abnix_testkit::images::{ext4_image, real_tree, seeded_random};
use abnix_testkit::{credentials_file, S3Server};
use tempfile::TempDir;

fn abnix_update(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_abnix-update"))
        .args(args)
        .output()
        .expect("running abnix-update")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The stderr of a run that must fail with exit code 1 and print nothing on
/// stdout (no success is reported).
fn failure(out: &Output) -> String {
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "printed on failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

fn uuid_of(version: u64) -> String {
    format!("c0ffee00-0000-4000-8000-{version:012}")
}

/// A server, a signing key made by `keygen`, a tree of real files, and the
/// REMOTE flags that reach the server.
struct Fixture {
    server: S3Server,
    dir: TempDir,
    tree: PathBuf,
    secret: String,
    public: String,
    credentials: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let server = S3Server::start();
        let dir = tempfile::tempdir().unwrap();
        let tree = real_tree(dir.path(), 4 << 20);
        let secret = dir.path().join("fleet.key").to_str().unwrap().to_owned();
        let public = stdout(&abnix_update(&[
            "keygen", "--name", "fleet-1", "--out", &secret,
        ]))
        .trim()
        .to_owned();
        let credentials = credentials_file(dir.path(), &server);
        Fixture {
            server,
            dir,
            tree,
            secret,
            public,
            credentials,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// The REMOTE flags, trusting the fixture's key.
    fn remote_flags(&self) -> Vec<String> {
        [
            "--endpoint",
            &self.server.endpoint(),
            "--region",
            "us-east-1",
            "--bucket",
            self.server.bucket(),
            "--prefix",
            "fleet",
            "--channel",
            "kiosk",
            "--path-style",
            "--credentials",
            self.credentials.to_str().unwrap(),
            "--trusted-key",
            &self.public,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Packs version `version` with the CLI; returns the bundle directory
    /// and the raw image.
    fn pack(&self, version: u64) -> (String, String) {
        fs::write(self.tree.join("release"), format!("{version}\n")).unwrap();
        let image = ext4_image(
            &self.tree,
            &uuid_of(version),
            12 << 20,
            Path::new(&self.path(&format!("root-{version}.ext4"))),
        );
        let kernel = self.path("kernel");
        let initrd = self.path("initrd");
        fs::write(&kernel, seeded_random(200_000, 1)).unwrap();
        fs::write(&initrd, seeded_random(300_000, 2)).unwrap();
        let bundle = self.path(&format!("bundle-{version}"));
        stdout(&abnix_update(&[
            "pack",
            "--image",
            image.to_str().unwrap(),
            "--kernel",
            &kernel,
            "--initrd",
            &initrd,
            "--cmdline",
            "init=/nix/store/x-nixos-system/init",
            "--version",
            &version.to_string(),
            "--label",
            &format!("build {version}"),
            "--key",
            &self.secret,
            "--out",
            &bundle,
        ]));
        (bundle, image.to_str().unwrap().to_owned())
    }

    fn run(&self, command: &str, args: &[&str]) -> Output {
        let mut all = vec![command.to_owned()];
        all.extend(args.iter().map(|s| s.to_string()));
        all.extend(self.remote_flags());
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        abnix_update(&all)
    }

    fn publish(&self, bundle: &str, extra: &[&str]) -> Output {
        let mut args = vec!["--bundle", bundle, "--key", &self.secret];
        args.extend(extra);
        self.run("publish", &args)
    }

    fn fetch(&self, to: &str) -> Output {
        self.run("fetch", &["--to", to])
    }

    fn image_key(&self, version: u64) -> String {
        format!("fleet/kiosk/{version}-{}.img.zst", uuid_of(version))
    }
}

#[test]
fn publish_then_fetch_gives_the_packed_image() {
    let f = Fixture::new();
    let (bundle, image) = f.pack(1);
    let published = stdout(&f.publish(&bundle, &[]));
    assert!(
        published.starts_with(&format!(
            "published 1 ({}) to abnix-test/fleet/kiosk\nprevious none\n",
            uuid_of(1)
        )),
        "{published}"
    );
    let last_upload = published.lines().rfind(|l| l.contains("uploaded"));
    assert_eq!(last_upload, Some("  uploaded fleet/kiosk.meta"));

    let to = f.path("fetched.img");
    let fetched = stdout(&f.fetch(&to));
    assert!(fetched.contains("version 1\n"), "{fetched}");
    assert!(
        fetched.contains(&format!("id {}\n", uuid_of(1))),
        "{fetched}"
    );
    assert!(
        fetched.contains(&format!("bytes {}\n", 12 << 20)),
        "{fetched}"
    );
    assert!(fetched.contains("resumes 0\n"), "{fetched}");
    for line in ["time ", "rate "] {
        assert!(fetched.contains(line), "{fetched}");
    }
    assert!(fs::read(&to).unwrap() == fs::read(&image).unwrap());
    assert!(!Path::new(&format!("{to}.partial")).exists());

    // Version 2 replaces it, and fetch now brings version 2 over the file;
    // both say so in JSON too.
    let (bundle, image) = f.pack(2);
    let published: serde_json::Value =
        serde_json::from_str(&stdout(&f.publish(&bundle, &["--json"]))).unwrap();
    assert_eq!(
        published["channel"], "abnix-test/fleet/kiosk",
        "{published}"
    );
    assert_eq!(published["published"]["version"], 2, "{published}");
    assert_eq!(published["published"]["id"], uuid_of(2), "{published}");
    assert_eq!(published["previous"]["version"], 1, "{published}");
    assert_eq!(published["previous"]["id"], uuid_of(1), "{published}");
    let uploaded = published["uploaded"].as_array().unwrap();
    assert_eq!(uploaded.last().unwrap(), "fleet/kiosk.meta", "{published}");
    assert!(uploaded.len() >= 3, "{published}");
    assert_eq!(published["pruned"], serde_json::json!([]), "{published}");

    let json = stdout(&f.run("fetch", &["--to", &to, "--json"]));
    let fetched: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(fetched["version"], 2, "{fetched}");
    assert_eq!(fetched["id"], uuid_of(2), "{fetched}");
    assert_eq!(fetched["bytes"], 12 << 20, "{fetched}");
    assert_eq!(fetched["resumes"], 0, "{fetched}");
    assert!(fetched["label"].is_string(), "{fetched}");
    for number in ["seconds", "mib_per_second"] {
        assert!(
            fetched[number].as_f64().is_some_and(|n| n > 0.0),
            "{fetched}"
        );
    }
    assert!(fs::read(&to).unwrap() == fs::read(&image).unwrap());
}

#[test]
fn fetch_of_a_corrupted_image_fails_naming_the_chunk_and_leaves_no_file() {
    let f = Fixture::new();
    let (bundle, _) = f.pack(1);
    stdout(&f.publish(&bundle, &[]));
    // One byte in the middle of the stored object: it lands in some frame,
    // which then fails to decode or decodes to a chunk whose hash differs.
    let stored = f.server.object_path(&f.image_key(1));
    let mut bytes = fs::read(&stored).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&stored, bytes).unwrap();

    let to = f.path("fetched.img");
    let err = failure(&f.fetch(&to));
    assert!(
        err.starts_with("abnix-update: error: writing version 1 into "),
        "{err}"
    );
    assert!(err.contains(": chunk "), "{err}");
    // Said once, not once per layer of the error chain.
    assert_eq!(err.matches(" chunk ").count(), 1, "{err}");
    assert!(!Path::new(&to).exists());
    assert!(!Path::new(&format!("{to}.partial")).exists());
}

#[test]
fn publish_refuses_an_older_version_unless_forced_and_prunes_with_keep() {
    let f = Fixture::new();
    let (v1, _) = f.pack(1);
    let (v2, _) = f.pack(2);
    let (v3, _) = f.pack(3);
    stdout(&f.publish(&v2, &[]));
    stdout(&f.publish(&v3, &[]));

    let err = failure(&f.publish(&v1, &[]));
    assert_eq!(
        err.trim_end(),
        "abnix-update: error: publishing version 1 to abnix-test/fleet/kiosk: \
         version 1 is not greater than the channel's current version 3 \
         (--force publishes it anyway)"
    );

    let forced = stdout(&f.publish(&v1, &["--force", "--keep", "1"]));
    assert!(
        forced.contains(&format!("previous 3 ({})\n", uuid_of(3))),
        "{forced}"
    );
    // Version 3 is the newest, version 1 the one just published: only 2 goes.
    assert!(
        forced.ends_with(&format!("  pruned 2 ({})\n", uuid_of(2))),
        "{forced}"
    );
    // The same, published again, in JSON: nothing left to prune.
    let again: serde_json::Value = serde_json::from_str(&stdout(
        &f.publish(&v1, &["--force", "--keep", "1", "--json"]),
    ))
    .unwrap();
    assert_eq!(again["published"]["version"], 1, "{again}");
    assert_eq!(again["previous"]["version"], 1, "{again}");
    assert!(!f.server.object_path(&f.image_key(2)).exists());
    assert!(f.server.object_path(&f.image_key(3)).exists());
    assert!(stdout(&f.fetch(&f.path("fetched.img"))).contains("version 1\n"));

    // A usage error, refused by the argument parser (exit code 2).
    let out = f.publish(&v1, &["--keep", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value '0' for '--keep <N>'"), "{err}");
}

#[test]
fn fetch_reads_the_device_config_and_flags_override_it() {
    let f = Fixture::new();
    let (bundle, image) = f.pack(4);
    stdout(&f.publish(&bundle, &[]));
    let config = f.path("config.toml");
    fs::write(
        &config,
        format!(
            "endpoint = \"{}\"\nbucket = \"{}\"\nprefix = \"fleet\"\nchannel = \"kiosk\"\n\
             path_style = true\ncredentials = \"{}\"\ntrusted_keys = [\"{}\"]\n",
            f.server.endpoint(),
            f.server.bucket(),
            f.credentials.display(),
            f.public
        ),
    )
    .unwrap();

    let to = f.path("fetched.img");
    let fetched = stdout(&abnix_update(&["fetch", "--to", &to, "--config", &config]));
    assert!(fetched.contains("version 4\n"), "{fetched}");
    assert!(fs::read(&to).unwrap() == fs::read(&image).unwrap());

    // A flag wins over the file: an empty channel has no meta.
    let err = failure(&abnix_update(&[
        "fetch",
        "--to",
        &to,
        "--config",
        &config,
        "--channel",
        "beta",
    ]));
    assert!(
        err.contains(
            "fetching the latest meta of abnix-test/fleet/beta: fleet/beta.meta: no such object"
        ),
        "{err}"
    );
    // A key passed with --trusted-key adds to the config's, it does not
    // replace them.
    let other = stdout(&abnix_update(&[
        "keygen",
        "--name",
        "other",
        "--out",
        &f.path("other.key"),
    ]));
    let fetched = stdout(&abnix_update(&[
        "fetch",
        "--to",
        &to,
        "--config",
        &config,
        "--trusted-key",
        other.trim(),
    ]));
    assert!(fetched.contains("version 4\n"), "{fetched}");
}

#[test]
fn remote_settings_are_checked_before_any_request() {
    let f = Fixture::new();
    let (bundle, _) = f.pack(1);
    let err = failure(&abnix_update(&[
        "publish", "--bundle", &bundle, "--key", &f.secret, "--region", "r", "--bucket", "b",
    ]));
    assert!(
        err.contains("--channel is required without --config"),
        "{err}"
    );
    let err = failure(&abnix_update(&[
        "fetch",
        "--to",
        &f.path("x.img"),
        "--region",
        "r",
        "--bucket",
        "b",
        "--channel",
        "c",
    ]));
    assert!(err.contains("no trusted public key"), "{err}");
    // A bundle signed by a key the fleet does not trust is not published.
    let stranger = stdout(&abnix_update(&[
        "keygen",
        "--name",
        "stranger",
        "--out",
        &f.path("stranger.key"),
    ]));
    let err = failure(&abnix_update(&[
        "publish",
        "--bundle",
        &bundle,
        "--key",
        &f.secret,
        "--endpoint",
        &f.server.endpoint(),
        "--region",
        "us-east-1",
        "--bucket",
        f.server.bucket(),
        "--channel",
        "kiosk",
        "--path-style",
        "--anonymous",
        "--trusted-key",
        stranger.trim(),
    ]));
    assert!(err.contains("opening the bundle"), "{err}");
    assert!(
        err.contains("signed only by untrusted keys: fleet-1"),
        "{err}"
    );
}

/// A channel whose meta expired is refused by fetch (as by devices) until
/// `publish --resign` signs the same version again with a new expiry; its
/// signature file then holds both signings, so a device that read the old
/// pointer a moment before still verifies it.
#[test]
fn resign_gives_the_current_version_a_new_expiry() {
    let f = Fixture::new();
    let (bundle, image) = f.pack(1);
    stdout(&f.publish(&bundle, &["--valid-for", "1s"]));
    let pointer = f.server.object_path("fleet/kiosk.meta");
    let first = fs::read(&pointer).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let to = f.path("fetched.img");
    let err = failure(&f.fetch(&to));
    assert!(
        err.contains("the channel abnix-test/fleet/kiosk is stale: the meta of version 1 expired"),
        "{err}"
    );

    let resigned = stdout(&f.run("publish", &["--resign", "--key", &f.secret]));
    assert!(
        resigned.starts_with(&format!(
            "published 1 ({}) to abnix-test/fleet/kiosk\nprevious 1 ({})\n",
            uuid_of(1),
            uuid_of(1)
        )),
        "{resigned}"
    );
    // Only the meta, its signatures and the pointer are written.
    assert_eq!(resigned.matches("uploaded").count(), 3, "{resigned}");
    let second = fs::read(&pointer).unwrap();
    assert_ne!(first, second);
    let text = String::from_utf8(second.clone()).unwrap();
    assert!(text.contains("\"channel\": \"kiosk\""), "{text}");
    assert!(stdout(&f.fetch(&to)).contains("version 1\n"));
    assert!(fs::read(&to).unwrap() == fs::read(&image).unwrap());

    let keys: TrustedKeys = [PublicKey::parse(&f.public).unwrap()].into_iter().collect();
    let signatures = fs::read(
        f.server
            .object_path(&format!("fleet/kiosk/1-{}.meta.sig", uuid_of(1))),
    )
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&signatures).lines().count(), 2);
    for meta in [&first, &second] {
        keys.verify(meta, &signatures).unwrap();
    }
}

/// The channel's meta as JSON.
fn pointer_json(f: &Fixture) -> serde_json::Value {
    serde_json::from_slice(&fs::read(f.server.object_path("fleet/kiosk.meta")).unwrap()).unwrap()
}

/// The fleet flags end to end: a staged publish (format 3), a resign that
/// keeps the rollout, a halt, a revert to version 1's content as version
/// 3 (its objects re-used: fetch gives version 1's image), and the errors
/// a revert to nothing older gives.
#[test]
fn rollout_halt_and_revert_through_the_cli() {
    let f = Fixture::new();
    let (bundle_1, image_1) = f.pack(1);
    let (bundle_2, _) = f.pack(2);
    stdout(&f.publish(&bundle_1, &[]));
    let err = failure(&f.publish(&bundle_2, &["--rollout-over", "400d"]));
    assert!(err.contains("longer than a year"), "{err}");
    stdout(&f.publish(&bundle_2, &["--rollout-over", "2d"]));
    let staged = pointer_json(&f);
    assert_eq!(staged["format"], 3);
    let rollout = &staged["published"]["rollout"];
    assert_eq!(rollout["over_secs"], 172_800);
    assert_eq!(rollout["start"], staged["published"]["signed_at"]);
    assert_eq!(rollout["halted_at"], serde_json::Value::Null);

    std::thread::sleep(std::time::Duration::from_secs(1));
    stdout(&f.run("publish", &["--resign", "--key", &f.secret]));
    let resigned = pointer_json(&f);
    assert_ne!(
        resigned["published"]["signed_at"],
        staged["published"]["signed_at"]
    );
    assert_eq!(resigned["published"]["rollout"], *rollout);

    stdout(&f.run("publish", &["--halt", "--key", &f.secret]));
    let halted = pointer_json(&f);
    assert_eq!(halted["version"], 2);
    assert_eq!(halted["published"]["rollout"]["start"], rollout["start"]);
    assert_eq!(
        halted["published"]["rollout"]["halted_at"],
        halted["published"]["signed_at"]
    );

    for (n, reason) in [
        ("2", "not older than the channel's current version 2"),
        ("7", "not older"),
    ] {
        let err = failure(&f.run("publish", &["--revert-to", n, "--key", &f.secret]));
        assert!(err.contains(reason), "{err}");
    }
    let reverted = stdout(&f.run("publish", &["--revert-to", "1", "--key", &f.secret]));
    assert!(
        reverted.starts_with(&format!(
            "published 3 ({}) to abnix-test/fleet/kiosk\nprevious 2 ({})\n",
            uuid_of(1),
            uuid_of(2)
        )),
        "{reverted}"
    );
    assert_eq!(reverted.matches("uploaded").count(), 3, "{reverted}");
    let pointer = pointer_json(&f);
    assert_eq!(
        (pointer["format"].clone(), pointer["version"].clone()),
        (2.into(), 3.into())
    );
    assert_eq!(
        pointer["image"]["object"],
        format!("1-{}.img.zst", uuid_of(1))
    );
    let to = f.path("reverted.img");
    assert!(stdout(&f.fetch(&to)).contains("version 3\n"));
    assert!(fs::read(&to).unwrap() == fs::read(&image_1).unwrap());

    // Version 1's objects gone: nothing to publish again.
    fs::remove_file(
        f.server
            .object_path(&format!("fleet/kiosk/1-{}.kernel", uuid_of(1))),
    )
    .unwrap();
    let err = failure(&f.run("publish", &["--revert-to", "1", "--key", &f.secret]));
    assert!(err.contains("version 1 cannot be published again"), "{err}");
    let err = failure(&f.run("publish", &["--revert-to", "0", "--key", &f.secret]));
    assert!(err.contains("holds no version 0"), "{err}");
}
