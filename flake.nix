# abnix as a flake. Written for machines with Nix; this repository's CI
# parses and lints it and runs checks.module-eval's evaluation with nixpkgs'
# lib (nix/check.sh), since nixpkgs cannot be fetched there.
#
#   lib.mkAbnix { modules = [ ./kiosk.nix ]; version = 7; ... }
#       -> { installer, version, upload, template, vm, image, bundle, toplevel, ... }
#   nixosModules.default       the host module (abnix.* options)
#   overlays.default           pkgs.abnix: abnix-install and abnix-update
#   packages.<system>.abnix    the same
#   apps.<system>.default      the demo: the kiosk example booted in QEMU
#   devShells.<system>.default Rust, QEMU with OVMF (OVMF_CODE, OVMF_VARS),
#                              Garage, and the tools of nix/check.sh
#   formatter.<system>         nixfmt-tree: `nix fmt`
#   checks.<system>.module-eval  the host and installer modules evaluated
#                              and compared with systemd/ and the Rust side
#   checks.x86_64-linux.vm-test  install, update and fall back, with Garage
#
# aarch64-linux hosts build natively on aarch64 or cross-compiled from
# x86_64 (packages.x86_64-linux.kiosk-aarch64-*), as in the seeds'
# nixos-appliance-ab-ota-demo.
{
  description = "abnix: self-updating, read-only NixOS hosts with A/B slots";

  # The oldest NixOS release abnix supports (nix/README.md, "Toolchain");
  # newer ones work too: `inputs.abnix.inputs.nixpkgs.follows = "nixpkgs"`.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forEachSystem = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});

      mkAbnix = import ./nix/lib/mk-abnix.nix { inherit nixpkgs; };

      # The kiosk example, signed with the repository's test key so that it
      # builds without any setup. Never use that key for a real fleet.
      kiosk =
        { hostSystem, buildSystem }:
        mkAbnix {
          modules = [ ./examples/kiosk/configuration.nix ];
          version = 1;
          inherit hostSystem buildSystem;
          signingKeyFile = "${./nix/tests/abnix-test.secret}";
        };
    in
    {
      lib = { inherit mkAbnix; };

      overlays.default = final: _prev: {
        abnix = final.callPackage ./nix/package.nix { };
      };

      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./nix/modules/host.nix ];
          abnix.package = lib.mkDefault (pkgs.callPackage ./nix/package.nix { });
        };

      packages = forEachSystem (
        system: pkgs:
        let
          native = kiosk {
            hostSystem = system;
            buildSystem = system;
          };
        in
        {
          abnix = pkgs.callPackage ./nix/package.nix { };
          default = self.packages.${system}.abnix;
          kiosk-installer = native.installer;
          kiosk-template = native.template;
          kiosk-upload = native.upload;
        }
        // lib.optionalAttrs (system == "x86_64-linux") (
          let
            cross = kiosk {
              hostSystem = "aarch64-linux";
              buildSystem = "x86_64-linux";
            };
          in
          {
            abnix-aarch64 = pkgs.pkgsCross.aarch64-multiplatform.callPackage ./nix/package.nix { };
            kiosk-aarch64-installer = cross.installer;
            kiosk-aarch64-template = cross.template;
            kiosk-aarch64-vm = cross.vm;
          }
        )
      );

      apps = forEachSystem (
        system: _pkgs: {
          default = {
            type = "app";
            program = "${
              (kiosk {
                hostSystem = system;
                buildSystem = system;
              }).vm
            }/bin/abnix-vm";
          };
        }
      );

      formatter = forEachSystem (_system: pkgs: pkgs.nixfmt-tree);

      devShells = forEachSystem (
        _system: pkgs: {
          default = pkgs.mkShell {
            packages = [
              # The workspace (Cargo.toml's rust-version is this release's rustc).
              pkgs.cargo
              pkgs.rustc
              pkgs.clippy
              pkgs.rustfmt
              # systest/*.sh and the machine tests; OVMF comes through the
              # variables below.
              pkgs.qemu
              # An S3 server for the bucket (examples/kiosk/README.md).
              pkgs.garage_2
              # nix/check.sh
              pkgs.deadnix
              pkgs.shellcheck
              pkgs.python3
              pkgs.erofs-utils
              pkgs.e2fsprogs
              pkgs.util-linux
              pkgs.nixfmt-tree
            ];
            # UEFI firmware for systest/boot-disk.sh and systest/run-installer-iso.sh
            # (systest/vm-common.sh): OVMF on x86_64, AAVMF on aarch64.
            OVMF_CODE = pkgs.OVMF.fd.firmware;
            OVMF_VARS = pkgs.OVMF.fd.variables;
          };
        }
      );

      checks = forEachSystem (
        system: pkgs:
        {
          module-eval = import ./nix/tests/eval/check.nix { inherit pkgs; };
        }
        # x86_64 only: the test boots the disk through GRUB on SeaBIOS.
        // lib.optionalAttrs (system == "x86_64-linux") {
          vm-test = import ./nix/tests/vm-test.nix {
            inherit pkgs mkAbnix;
          };
        }
      );
    };
}
