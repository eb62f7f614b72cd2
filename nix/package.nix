# abnix-install and abnix-update, built from this repository's Cargo
# workspace with the dependencies pinned by Cargo.lock.
{ lib, rustPlatform }:
let
  workspace = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = "abnix";
  inherit (workspace.workspace.package) version;

  # Only the workspace: editing the Nix side does not rebuild the tools.
  # qemu/ is optional so that this works before and after its crate joins
  # the workspace.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../core
      ../installer
      ../updater
      (lib.fileset.maybeMissing ../qemu/Cargo.toml)
      (lib.fileset.maybeMissing ../qemu/src)
      (lib.fileset.maybeMissing ../qemu/tests)
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  cargoBuildFlags = [
    "--package"
    "abnix-installer"
    "--package"
    "abnix-updater"
  ];

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
