# abnix-install, abnix-update and abnix-mkimage (the root image writer the
# image derivation runs on the build machine), built from this repository's
# Cargo workspace with the dependencies pinned by Cargo.lock.
{
  lib,
  stdenv,
  rustPlatform,
  installShellFiles,
}:
let
  pure = import ./lib/pure.nix;
  workspace = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = "abnix";
  inherit (workspace.workspace.package) version;

  # Only what cargo reads: the manifest, the lock file and every workspace
  # member (pure.cargoSources follows Cargo.toml's member list, and
  # nix/check.sh has cargo load the workspace from exactly these paths).
  # Editing nix/ does not rebuild the tools (systest/'s scripts do: they belong
  # to a member). fuzz/ is a workspace of its own.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions (map (path: ../. + "/${path}") (pure.cargoSources workspace));
  };

  cargoLock.lockFile = ../Cargo.lock;

  # No native build inputs beyond the C compiler of stdenv: the crates with C
  # code build it with the cc crate. zstd-sys compiles its bundled zstd;
  # ring 0.17 from crates.io ships its assembly pregenerated (no perl); and
  # aws-lc-sys 0.47 (aws-lc-rs, under the AWS SDK's TLS) takes its cc
  # builder with pregenerated bindings on x86_64 and aarch64 Linux: CMake,
  # Go, Perl and libclang are only for FIPS, bindgen or other targets
  # (aws-lc-sys builder/main.rs, get_builder; its book: "CMake is never
  # required for aws-lc-sys"). Check again when Cargo.lock moves to a new
  # aws-lc-sys.
  cargoBuildFlags = [
    "--package"
    "abnix-installer"
    "--package"
    "abnix-updater"
    "--package"
    "abnix-image"
  ];

  # Man pages (section 8) and bash, zsh and fish completions, written by the
  # binaries themselves from their clap definitions (core/src/cli_docs.rs):
  # only where the build machine can run what it built (not when cross
  # compiling).
  nativeBuildInputs = [ installShellFiles ];
  postInstall = lib.optionalString (stdenv.buildPlatform.canExecute stdenv.hostPlatform) ''
    $out/bin/abnix-update generate-docs cli-docs
    $out/bin/abnix-install --generate-docs cli-docs
    installManPage cli-docs/*.8
    installShellCompletion cli-docs/abnix-update.{bash,fish} cli-docs/abnix-install.{bash,fish} \
      --zsh cli-docs/_abnix-update cli-docs/_abnix-install
  '';

  # The test suite starts an S3 server, boots QEMU machines and downloads
  # Debian kernels for its fixtures: none of that is possible in the build
  # sandbox (no network, no KVM). It runs in CI (./scripts/test) instead.
  doCheck = false;

  meta = {
    description = "Self-updating read-only NixOS hosts with A/B slots: installer and updater";
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
    mainProgram = "abnix-update";
  };
}
