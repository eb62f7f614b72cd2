# abnix as a flake. Written for machines with Nix; this repository's CI only
# parses and lints it (nix/check.sh), since nixpkgs cannot be fetched there.
#
#   lib.mkAbnix { modules = [ ./kiosk.nix ]; version = 7; ... }
#       -> { installer, version, upload, template, vm, image, bundle, toplevel, ... }
#   nixosModules.default       the host module (abnix.* options)
#   packages.<system>.abnix    abnix-install and abnix-update
#   apps.<system>.default      the demo: the kiosk example booted in QEMU
#   checks.x86_64-linux.vm-test  install, update and fall back, with Garage
#
# aarch64-linux hosts build natively on aarch64 or cross-compiled from
# x86_64 (packages.x86_64-linux.kiosk-aarch64-*), as in the seeds'
# nixos-appliance-ab-ota-demo.
{
  description = "abnix: self-updating, read-only NixOS hosts with A/B slots";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

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

      # x86_64 only: the test boots the disk through GRUB on SeaBIOS.
      checks.x86_64-linux.vm-test = import ./nix/tests/vm-test.nix {
        pkgs = nixpkgs.legacyPackages.x86_64-linux;
        inherit mkAbnix;
      };
    };
}
