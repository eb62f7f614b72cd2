# The outputs of nix/lib/pure.nix for fixed example inputs, one attribute per
# file in this directory. nix/check.sh evaluates this (builtins only) and
# compares the result with the committed files, which the Rust side parses
# with its real parsers (config, installer config, layout, meta types).
let
  pure = import ../lib/pure.nix;

  testKey = "abnix-test:tpREIUigjfOYfBehsogk4+ZDL7tjppLJU1UUyeJpkdc=";
  rotatedKey = "fleet-2027:MNVdRNZ9AUZZdYpapleQNVL9nqpdMMX2LfV+YEe9kA8=";
  toplevel = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-kiosk-25.11";

  exampleLayouts = [
    {
      diskSize = "8G";
      sectorSize = 512;
      espSize = "512M";
      slotSize = "2G";
    }
    {
      diskSize = "8G";
      sectorSize = 4096;
      espSize = "512M";
      slotSize = "2G";
    }
    {
      diskSize = pure.minimumDiskSize {
        espSize = "256M";
        slotSize = "1G";
        rwSize = "64M";
      };
      sectorSize = 512;
      espSize = "256M";
      slotSize = "1G";
    }
  ];
in
{
  "defaults.json" = builtins.toJSON pure.defaults;

  # Every key, a custom endpoint, a reboot window and a check interval in
  # minutes, as examples/kiosk sets it (systemd's "min").
  "config.toml" = pure.deviceConfig {
    endpoint = "http://10.0.2.2:9000";
    region = "garage";
    bucket = "fleet";
    prefix = "abnix";
    channel = "kiosk";
    pathStyle = true;
    credentialsFile = pure.defaults.credentialsFile;
    trustedKeys = [
      testKey
      rotatedKey
    ];
    tries = 3;
    reboot = "window";
    rebootWindow = "02:00-04:00";
    checkInterval = "15min";
    recoveryKeys = [ "fleet-recovery:DVMlqrtmS04G/Ad3sFcUXIwo2MAEvdkkC/vBP2ZShCM=" ];
    revokedKeys = [ "fleet-2025:pM86aJwYOjb97dV8+Nto2d7oM9gFDUkcH+PQE0323Y0=" ];
    trustClock = "always";
    checkDeadline = "10m";
    updateDeadline = "12h";
    minTransferRate = "64K/60s";
  };

  # AWS S3 (no endpoint), the credential chain, defaults elsewhere.
  "config-minimal.toml" = pure.deviceConfig (
    pure.defaults
    // {
      bucket = "fleet";
      credentialsFile = "chain";
      trustedKeys = [ testKey ];
    }
  );

  "install.toml" = pure.installerConfig {
    bundle = "/iso/abnix/bundle";
    arch = pure.installerArch "x86_64-linux";
    slotSize = "4G";
    espSize = "512M";
    bootloader = "grub";
    wipe = false;
    allowRemovable = false;
    trustedKeys = [ testKey ];
    grubMkimage = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-grub-2.12/bin/grub-mkimage";
    grubBiosDir = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-grub-2.12/lib/grub/i386-pc";
    grubEfiDir = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-grub-2.12/lib/grub/x86_64-efi";
    systemdBootEfi = null;
    countdown = 10;
  };

  # What the duration options accept, with their seconds (null: refused);
  # core's parse_duration must agree on every one.
  "durations.json" = builtins.toJSON {
    inherit (pure.limits) minCheckIntervalSeconds;
    examples =
      map
        (text: {
          inherit text;
          seconds = if builtins.match pure.patterns.duration text == null then null else pure.parseDuration text;
        })
        [
          "90"
          "90s"
          "30m"
          "15min"
          "6h"
          "1d"
          "0"
          "007m"
          "99999999d"
          ""
          "min"
          "5M"
          "5H"
          "5w"
          "1.5h"
          "5 min"
          " 6h"
          "+5m"
          "-5m"
          "5mins"
          "1h30m"
          "123456789"
        ];
  };

  # A UEFI-only host with systemd-boot (aarch64's default): no GRUB paths,
  # the installer may wipe and take a removable disk, no countdown.
  "install-systemd-boot.toml" = pure.installerConfig {
    bundle = "/iso/abnix/bundle";
    arch = pure.installerArch "aarch64-linux";
    slotSize = "2G";
    espSize = "256M";
    bootloader = "systemd-boot";
    wipe = true;
    allowRemovable = true;
    trustedKeys = [
      testKey
      rotatedKey
    ];
    grubMkimage = null;
    grubBiosDir = null;
    grubEfiDir = null;
    systemdBootEfi = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-systemd-257.9/lib/systemd/boot/efi/systemd-bootaa64.efi";
    countdown = 0;
  };

  # An aarch64 host with GRUB, as its template is built on x86_64: the build
  # machine's grub-mkimage, the host's arm64-efi modules, no BIOS part.
  "install-aarch64.toml" = pure.installerConfig {
    bundle = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-abnix-stable-7-bundle";
    arch = pure.installerArch "aarch64-linux";
    slotSize = "4G";
    espSize = "512M";
    bootloader = "grub";
    wipe = false;
    allowRemovable = false;
    trustedKeys = [ testKey ];
    grubMkimage = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-grub-x86_64-2.12/bin/grub-mkimage";
    grubBiosDir = null;
    grubEfiDir = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-grub-2.12/lib/grub/arm64-efi";
    systemdBootEfi = null;
    countdown = 0;
  };

  "layout.json" = builtins.toJSON (
    map (
      example:
      example
      // {
        layout = pure.layout example;
      }
    ) exampleLayouts
  );

  "version-id.json" = builtins.toJSON (
    map
      (version: {
        inherit version toplevel;
        id = pure.versionId { inherit version toplevel; };
      })
      [
        1
        7
        4294967296
      ]
  );

  "version.json" = builtins.toJSON (
    pure.versionDescription {
      version = 7;
      id = pure.versionId {
        version = 7;
        inherit toplevel;
      };
      label = "kiosk v7 \"quoted\" ü";
      fsType = "erofs";
      cmdline = pure.cmdline {
        inherit toplevel;
        kernelParams = [
          "console=ttyS0,115200"
          "quiet"
        ];
      };
    }
  );
}
