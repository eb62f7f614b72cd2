# abnix without flakes, organixm-style: a function from your host's NixOS
# configuration and a version number to everything you build for a fleet.
#
#   nix-build --arg config ./kiosk.nix --argstr version 7 -A installer
#
# Outputs (-A):
#   installer  the installer ISO: result/iso/*.iso (needs signingKeyFile)
#   version    the unsigned version: image, kernel, initrd, cmdline, version.json
#   upload     result/bin/abnix-upload: signs ($ABNIX_SIGNING_KEY) and publishes
#   template   a bootable disk: result/disk.qcow2, and result/disk.raw with
#              --arg templateRaw true (needs signingKeyFile)
#   vm         result/bin/abnix-vm: boots the template in QEMU
#   image, bundle, toplevel, versionId, host   the pieces, for inspection
#
# See nix/README.md for the whole workflow and examples/kiosk for a host.
{
  # The host's NixOS configuration: a module (a path such as ./kiosk.nix, or
  # a function) or a list of modules. It must set abnix.bucket and
  # abnix.trustedKeys; see nix/modules/host.nix for every abnix.* option.
  config,
  # The version number, strictly increasing per channel. A string on the
  # command line (--argstr version 7) or a number.
  version,
  # Human text for the version; by default "<hostname> <version>".
  label ? null,
  # Pin the version id (a UUID). By default it is derived from the version
  # number and the system (nix/README.md, "Version id").
  versionId ? null,
  # A string path outside the Nix store to the ed25519 signing key (Nix's
  # name:base64 format), readable inside the build sandbox. Needed by
  # installer and template only; the upload script reads $ABNIX_SIGNING_KEY.
  signingKeyFile ? null,
  # The system the host runs on, and the one that builds it.
  # Cross: --argstr system aarch64-linux --argstr buildSystem x86_64-linux
  system ? builtins.currentSystem,
  buildSystem ? system,
  # Initial size of the rw partition in the template (it grows on first boot).
  templateRwSize ? "1G",
  # The template is a qcow2 disk (result/disk.qcow2: only the written blocks,
  # for QEMU, or `qemu-img convert` to VHD/VMDK for a cloud). true also keeps
  # it raw (result/disk.raw, e.g. for dd or a raw cloud import): that file
  # takes the whole disk size in the store, about 9.5 GiB with the default
  # 4G slots (two slots, the ESP, templateRwSize).
  templateRaw ? false,
  # abnix-install on the ISO: wipe a disk that holds other partitions, allow
  # removable disks, seconds of countdown before writing.
  installerWipe ? false,
  installerAllowRemovable ? false,
  installerCountdown ? 10,
  # nixpkgs to build with (a path): <nixpkgs> from NIX_PATH by default.
  nixpkgs ? <nixpkgs>,
}:
# toString: a path outside the store is used in place; interpolating the path
# itself would copy all of nixpkgs into the store first.
import ./nix/lib/mk-abnix.nix { nixpkgs = toString nixpkgs; } {
  modules = if builtins.isList config then config else [ config ];
  inherit
    version
    label
    versionId
    signingKeyFile
    templateRwSize
    templateRaw
    ;
  hostSystem = system;
  inherit buildSystem;
  installer = {
    wipe = installerWipe;
    allowRemovable = installerAllowRemovable;
    countdown = installerCountdown;
  };
}
