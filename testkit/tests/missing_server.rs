//! Without s3s-fs, tests fail loudly with the install command instead of
//! skipping. Its own test binary: it empties the process's search paths.

use abnix_testkit::S3Server;

#[test]
#[should_panic(expected = "cargo install --locked s3s-fs@0.14.1 --features binary")]
fn missing_s3s_fs_panics_with_the_install_command() {
    let empty = tempfile::tempdir().unwrap();
    std::env::set_var("PATH", empty.path());
    std::env::set_var("HOME", empty.path());
    std::env::remove_var("CARGO_HOME");
    S3Server::start();
}
