# mkAbnix: from a NixOS configuration and a few settings to every abnix
# output. default.nix (nixpkgs as a path) and flake.nix (the nixpkgs input)
# both call it; nix/README.md documents every argument.
# nixpkgs: its source, as a string (default.nix) or a flake input.
{ nixpkgs }:
{
  # The host's NixOS modules.
  modules,
  # The version number (DESIGN §3): strictly increasing per channel.
  version,
  # Human text for this version; the module's default names host and number.
  label ? null,
  # Pin the version id (a UUID); by default it is derived, see nix/README.md.
  versionId ? null,
  # The system the host runs on, and the one that builds it (cross-compiling
  # an aarch64 host on x86_64: hostSystem = "aarch64-linux",
  # buildSystem = "x86_64-linux").
  hostSystem ? "x86_64-linux",
  buildSystem ? hostSystem,
  # The signing key for the bundle inside the installer and the template: a
  # string path outside the store, visible in the build sandbox (README,
  # "Signing"). The upload script takes the key at run time instead.
  signingKeyFile ? null,
  # Initial size of abnix-rw in the template image (it grows on first boot).
  templateRwSize ? "1G",
  # Also keep the template as a raw disk (result/disk.raw): the full disk
  # size in the store, about 9.5 GiB with the default 4G slots. By default
  # the template is only result/disk.qcow2.
  templateRaw ? false,
  # abnix-install settings: { wipe ? false, allowRemovable ? false, countdown ? 10 }.
  installer ? { },
}:
let
  pure = import ./pure.nix;
  installerSettings = {
    wipe = false;
    allowRemovable = false;
    countdown = 10;
  }
  // installer;

  abnixFor = pkgs: pkgs.callPackage ../package.nix { };

  evalSystem =
    modules':
    import "${nixpkgs}/nixos/lib/eval-config.nix" {
      # The platforms come from the nixpkgs.* options below, as lib.nixosSystem does.
      system = null;
      modules = [
        {
          nixpkgs.hostPlatform = hostSystem;
          nixpkgs.buildPlatform = buildSystem;
        }
      ]
      ++ modules';
    };

  firstEval = evalSystem (
    [
      ../modules/host.nix
      (
        { lib, pkgs, ... }:
        {
          abnix = {
            enable = true;
            version = pure.parseVersion version;
            package = lib.mkDefault (abnixFor pkgs);
          }
          // lib.optionalAttrs (label != null) { inherit label; }
          // lib.optionalAttrs (versionId != null) { inherit versionId; };
        }
      )
    ]
    ++ modules
  );

  # Without a given id, the first evaluation used a placeholder; its system's
  # store path and the version number give the real id (pure.versionId), and
  # a second evaluation puts it into the system. Evaluation only: nothing is
  # built twice.
  host =
    if firstEval.config.abnix.versionId != null then
      firstEval
    else
      firstEval.extendModules {
        modules = [
          {
            abnix.versionId = pure.versionId {
              version = pure.parseVersion version;
              toplevel = firstEval.config.system.build.toplevel.outPath;
            };
          }
        ];
      };

  artifacts = import ../builders {
    inherit
      host
      signingKeyFile
      templateRwSize
      templateRaw
      ;
    abnixBuild = abnixFor host.pkgs.buildPackages;
    installer = installerSettings;
  };

  installerSystem = evalSystem [
    ../modules/installer-iso.nix
    (
      { pkgs, ... }:
      {
        abnixInstaller = {
          package = abnixFor pkgs;
          inherit (artifacts) bundle;
          # grub-mkimage runs on the machine being installed.
          installConfig =
            bundlePath:
            artifacts.installerConfig {
              inherit bundlePath;
              mkimagePkgs = pkgs;
              inherit (installerSettings) countdown;
            };
        };
      }
    )
  ];
in
{
  # The evaluated host (config, options, pkgs), e.g. for `nix repl`.
  inherit host;
  inherit (host.config.system.build) toplevel;
  inherit (host.config.abnix) versionId;
  inherit (artifacts)
    image
    version
    bundle
    upload
    template
    vm
    ;
  # The ISO: result/iso/*.iso.
  installer = installerSystem.config.system.build.isoImage;
}
