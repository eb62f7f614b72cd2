# The installer ISO (DESIGN §7): it boots, says on the console what it is
# about to do, installs the bundled version onto the first eligible disk with
# `abnix-install --auto` and powers off. The bundle sits on the ISO next to
# the Nix store image, not inside it, so it is not compressed a second time.
{
  config,
  lib,
  pkgs,
  modulesPath,
  ...
}:
let
  cfg = config.abnixInstaller;
  bundleOnMedium = "/abnix/bundle";
  # iso-image.nix mounts the medium here.
  medium = "/iso";
  diskWaitSeconds = 120;

  waitForDisk = pkgs.writeShellApplication {
    name = "abnix-wait-for-disk";
    runtimeInputs = [
      pkgs.coreutils
      pkgs.util-linux
      config.systemd.package
    ];
    text = builtins.readFile ./wait-for-disk.sh;
  };
in
{
  imports = [
    (modulesPath + "/installer/cd-dvd/iso-image.nix")
    # Storage and USB drivers for whatever machine it boots on.
    (modulesPath + "/profiles/all-hardware.nix")
  ];

  options.abnixInstaller = {
    package = lib.mkOption {
      type = lib.types.package;
      description = "The abnix tools for the machine being installed (abnix-install).";
    };
    bundle = lib.mkOption {
      type = lib.types.package;
      description = "The signed bundle of the version to install.";
    };
    installConfig = lib.mkOption {
      type = lib.types.functionTo lib.types.lines;
      description = ''
        Given the bundle's path on the running system, the abnix-install
        configuration (docs/cli.md): trusted keys, slot and ESP sizes, boot
        loader and its files.
      '';
    };
  };

  config = {
    isoImage = {
      volumeID = "ABNIX_INSTALLER";
      makeEfiBootable = true;
      makeUsbBootable = true;
      contents = [
        {
          source = cfg.bundle;
          target = bundleOnMedium;
        }
      ];
    };

    environment.etc."abnix/install.toml".text = cfg.installConfig "${medium}${bundleOnMedium}";

    systemd.services.abnix-install = {
      description = "abnix: install the bundled version onto this machine's disk";
      wantedBy = [ "multi-user.target" ];
      after = [ "local-fs.target" ];
      # mkfs.ext4 formats abnix-rw; wipefs (libblkid) and findfs prove a
      # disk blank and find the medium by the kernel command line's root=
      # (without them the installer refuses a disk it cannot prove blank).
      path = [
        cfg.package
        pkgs.e2fsprogs
        pkgs.util-linux
      ];
      serviceConfig = {
        Type = "oneshot";
        # Disks behind slow controllers show up late, and the installer
        # chooses among those present when it starts: wait (2 minutes at
        # most) until there is one, or say on the console that none came.
        ExecStartPre = "${waitForDisk}/bin/abnix-wait-for-disk ${toString diskWaitSeconds} ${medium}";
        ExecStart = "${cfg.package}/bin/abnix-install --auto --config /etc/abnix/install.toml --poweroff";
        StandardOutput = "journal+console";
        StandardError = "journal+console";
      };
    };

    # The console is the monitor; the serial port gets the whole journal
    # too, for headless machines and QEMU. A journald.conf(5) drop-in rather
    # than a services.journald option: those changed in NixOS 26.11
    # (`console` and `extraConfig` removed, `settings` added), a drop-in
    # works on every release.
    environment.etc."systemd/journald.conf.d/abnix-installer.conf".text = ''
      [Journal]
      ForwardToConsole=yes
      TTYPath=/dev/ttyS0
    '';

    # When something goes wrong, whoever holds the medium gets a shell to see
    # why (they could install anything with it anyway).
    services.getty.autologinUser = lib.mkDefault "root";

    networking.hostName = lib.mkDefault "abnix-installer";
    # Nothing on the ISO outlives a boot.
    system.stateVersion = lib.mkDefault lib.trivial.release;
  };
}
