# The abnix host: a NixOS system that runs read-only from one of two slots
# (DESIGN §5, §6) and updates itself from a bucket.
#
# What a host looks like at run time:
#   /            the slot, read-only, found by UUID=<version id>
#   /etc         NixOS's etc overlay with its upper layer on a tmpfs: writable,
#                and every change is gone at the next boot
#   /rw          the abnix-rw partition; /var, /home and /root are bind mounts
#                of its var/, home/ and root/ (abnix's state is /var/lib/abnix)
#   the ESP      never mounted: abnix-update writes it directly
#
# Every NixOS option set here is listed, with the nixpkgs file that defines
# it, in nix/README.md.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  pure = import ../lib/pure.nix;
  cfg = config.abnix;
  inherit (lib) mkDefault mkForce mkOption types;

  rwMountPoint = "/rw";
  # Directories of abnix-rw and where they are bind-mounted, with their modes.
  rwBinds = {
    "/var" = "0755";
    "/home" = "0755";
    "/root" = "0700";
  };

  # The stage-1 mount units of the bind mounts, named as systemd names them.
  rwBindUnits = map (mountPoint: "${utils.escapeSystemdPath "/sysroot${mountPoint}"}.mount") (
    lib.attrNames rwBinds
  );

  rootId = if cfg.versionId != null then cfg.versionId else pure.placeholderVersionId;

  update = "${cfg.package}/bin/abnix-update";
  withConfig = "--config ${pure.defaults.configFile}";

  # Durations go both into timer units and, for checkInterval, into
  # config.toml: one grammar that systemd and abnix-update read alike
  # (pure.patterns.duration, docs/cli.md).
  duration = types.strMatching pure.patterns.duration;
  durationOfAtLeast =
    seconds:
    types.addCheck duration (text: pure.parseDuration text >= seconds)
    // {
      description = "duration of at least ${toString seconds} s (up to 8 digits, alone or with s, m, min, h or d)";
    };
  size = types.strMatching pure.patterns.size;
  # What config.toml's bucket and channel take (no spaces, no '/').
  name = types.strMatching pure.patterns.name;
  dailyWindow = types.addCheck types.str pure.isRebootWindow // {
    description = "daily window HH:MM-HH:MM in local time (start and end differ)";
  };
  unitName = types.strMatching pure.patterns.unitName // {
    description = "systemd unit name (such as app.service)";
  };
  publicKeys = types.listOf (types.strMatching pure.patterns.publicKey);
  transferRate = types.addCheck types.str pure.isTransferRate // {
    description = "SIZE/DURATION, both above 0 (such as 64K/60s; up to 6 digits of size)";
  };

  # Above the updater's own deadline by an hour, in systemd's units: the
  # updater ends a slow run itself and records why before systemd would.
  timeoutAbove =
    deadline:
    let
      seconds = pure.parseDuration deadline + 3600;
    in
    if lib.mod seconds 3600 == 0 then "${toString (seconds / 3600)}h" else "${toString seconds}s";

  # The sandbox of every abnix unit (systemd/README.md, "Sandboxing"); each
  # unit opens what it needs on top of it.
  sandbox = {
    ProtectSystem = "strict";
    PrivateMounts = true;
    ProtectHome = true;
    PrivateTmp = true;
    UMask = "0077";
    NoNewPrivileges = true;
    SystemCallFilter = [
      "@system-service"
      "~@privileged @resources"
    ];
    SystemCallErrorNumber = "EPERM";
    SystemCallArchitectures = "native";
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    RestrictNamespaces = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
  };
  # Units that need no network (and do not read the clock's state).
  offline = {
    PrivateNetwork = true;
    IPAddressDeny = "any";
    RestrictAddressFamilies = "AF_UNIX";
    ProtectClock = true;
  };
  # Units that write the disk through its block devices (the ESP too: abnix
  # writes FAT itself, nothing is mounted).
  blockDevices = {
    DevicePolicy = "closed";
    DeviceAllow = "block-* rw";
  };
in
{
  options.abnix = {
    enable = lib.mkEnableOption "the abnix read-only A/B host (root from a slot, /etc on tmpfs, self-update)";

    package = mkOption {
      type = types.package;
      description = "The abnix tools (abnix-update, abnix-install). The flake and default.nix set it.";
    };

    version = mkOption {
      type = types.ints.unsigned;
      example = 7;
      description = ''
        The version number: strictly increasing per channel, the anti-rollback
        order (DESIGN §3). A device never installs a version that is not
        greater than the one it runs.
      '';
    };

    label = mkOption {
      # What `abnix-update pack` takes (core's meta::check_label).
      type = types.addCheck types.str pure.isLabel // {
        description = "one line of at most 200 bytes, without control characters";
      };
      default = "${config.networking.hostName} ${toString cfg.version}";
      defaultText = lib.literalExpression ''"''${config.networking.hostName} ''${toString config.abnix.version}"'';
      example = "kiosk 2026-11-22 (cog 0.18)";
      description = "Human-readable text shown by `abnix-update status` and in boot menus.";
    };

    versionId = mkOption {
      type = types.nullOr (types.strMatching pure.patterns.uuid);
      default = null;
      example = "602ca684-2bac-458d-8517-a23b37fff6a6";
      description = ''
        The version id: the root filesystem's UUID, by which the root is
        mounted whichever slot holds it. `null` lets the abnix builders derive
        it from the version number and the system itself (see
        nix/README.md, "Version id"); set it to pin an id.
      '';
    };

    fsType = mkOption {
      type = types.enum [
        "erofs"
        "ext4"
      ];
      default = pure.defaults.fsType;
      description = ''
        Filesystem of the version image. erofs is read-only by design and
        smaller; ext4 images carry the `read-only` feature so the kernel never
        mounts them writable.
      '';
    };

    endpoint = mkOption {
      type = types.nullOr (types.strMatching pure.patterns.endpoint);
      default = pure.defaults.endpoint;
      example = "https://s3.example.com";
      description = "S3 endpoint URL; `null` for AWS S3.";
    };

    region = mkOption {
      type = types.str;
      default = pure.defaults.region;
      description = "S3 region (Garage's default is \"garage\").";
    };

    bucket = mkOption {
      # Required, null included: nullOr's emptyValue would make a host that
      # forgot its bucket an air-gapped one; without it (types.nix: "no
      # .value attr, meaning unset") leaving it out is still an error.
      type = types.nullOr name // {
        emptyValue = { };
      };
      example = "fleet";
      description = ''
        The bucket that holds the versions. `null` makes an air-gapped host:
        its config.toml names no bucket, channel, prefix or endpoint, no
        timer polls a bucket, reports cannot be turned on, and it installs
        new versions only with `abnix-update install --bundle DIR`
        (docs/cli.md, "Offline updates"). Boot counting, fallback and
        mark-good are the same.
      '';
    };

    prefix = mkOption {
      type = types.str;
      default = pure.defaults.prefix;
      description = "Key prefix inside the bucket; may be empty.";
    };

    channel = mkOption {
      type = types.nullOr name;
      default = if cfg.bucket == null then null else pure.defaults.channel;
      defaultText = lib.literalExpression ''if config.abnix.bucket == null then null else "${pure.defaults.channel}"'';
      example = "kiosk";
      description = ''
        The channel this host follows: `<prefix>/<channel>.meta` in the
        bucket, and os-release's IMAGE_ID. `null` (only with
        {option}`abnix.bucket` `null`, as the updater takes both or
        neither): no channel, no IMAGE_ID.
      '';
    };

    pathStyle = mkOption {
      type = types.bool;
      default = pure.defaults.pathStyle;
      description = "Path-style addressing, needed by MinIO, Garage and most self-hosted servers.";
    };

    trustedKeys = mkOption {
      type = types.nonEmptyListOf (types.strMatching pure.patterns.publicKey);
      example = [ "fleet-2026:tpREIUigjfOYfBehsogk4+ZDL7tjppLJU1UUyeJpkdc=" ];
      description = ''
        Public keys (Nix's `name:base64` format) whose signatures the host
        accepts. Several keys allow rotation: publish a version that trusts
        the new key, signed with the old one, then sign with the new one.
      '';
    };

    recoveryKeys = mkOption {
      type = publicKeys;
      default = pure.defaults.recoveryKeys;
      description = ''
        Offline keys (Nix's `name:base64` format) that may sign a meta
        revoking other keys, after a signing key was compromised
        (docs/security.md). They sign no versions.
      '';
    };

    revokedKeys = mkOption {
      type = publicKeys;
      default = pure.defaults.revokedKeys;
      description = ''
        Keys whose signatures count for nothing, nor the rollback floor they
        signed. A key cannot be both here and in
        {option}`abnix.trustedKeys` or {option}`abnix.recoveryKeys`.
      '';
    };

    trustClock = mkOption {
      type = types.nullOr (
        types.enum [
          "when-synchronized"
          "always"
        ]
      );
      default = pure.defaults.trustClock;
      description = ''
        When the host's clock decides whether a meta has expired:
        `"when-synchronized"` once the kernel reports it synchronized (by
        systemd-timesyncd, chrony or ntpd), `"always"` for machines whose
        clock is kept right otherwise. `null` leaves it to the updater
        (`"when-synchronized"`).
      '';
    };

    checkDeadline = mkOption {
      type = types.nullOr (durationOfAtLeast 1);
      default = pure.defaults.checkDeadline;
      example = "10min";
      description = ''
        How long a whole check may take (the network wait included). A
        duration as in {option}`abnix.checkInterval`; `null` leaves it to the
        updater (10 minutes).
      '';
    };

    updateDeadline = mkOption {
      type = types.nullOr (durationOfAtLeast 1);
      default = pure.defaults.updateDeadline;
      example = "12h";
      description = ''
        How long a whole update may take; the updater ends a slower one
        itself and records why. `abnix-update.service`'s `TimeoutStartSec=`
        is an hour more. A duration as in {option}`abnix.checkInterval`;
        `null` leaves it to the updater (6 hours).
      '';
    };

    minTransferRate = mkOption {
      type = types.nullOr transferRate;
      default = pure.defaults.minTransferRate;
      example = "64K/60s";
      description = ''
        Downloads that bring less than SIZE in every DURATION spent waiting
        fail (and the next check tries again). `null` leaves it to the
        updater (`"64K/60s"`).
      '';
    };

    credentialsFile = mkOption {
      type = types.either (types.enum [
        "chain"
        "systemd"
        "profile"
        "anonymous"
      ]) (types.strMatching "/.+");
      default = pure.defaults.credentialsFile;
      description = ''
        Where the updater's S3 credentials come from: an absolute path to a
        TOML file (`access_key_id`, `secret_access_key`, optional
        `session_token`) with mode 0600, normally on the rw partition so it is
        never part of an image; or `"systemd"` (the systemd credential
        `abnix.aws-credentials`, an AWS shared credentials file: point the
        unit's `LoadCredential=` at it); or `"profile"` (root's
        `~/.aws/credentials` and `~/.aws/config`); or `"chain"` (the
        standard AWS chain: environment, profiles, instance metadata); or
        `"anonymous"`. A profile other than `default` goes in a drop-in
        (`aws_profile`, docs/cli.md). It is a string, not a Nix path, so
        nothing is ever copied into the store.
      '';
    };

    report = mkOption {
      type = types.bool;
      default = pure.defaults.report;
      description = ''
        Whether the host writes a small report after each check, update,
        mark-good and rollback to `<prefix>/<channel>/hosts/<machine-id>.json`
        in `abnix.reportBucket`, for `abnix-update fleet` (docs/cli.md,
        "Reports"). Needs `abnix.reportCredentialsFile`.
      '';
    };

    reportCredentialsFile = mkOption {
      type = types.nullOr (types.strMatching "/.+");
      default = pure.defaults.reportCredentialsFile;
      example = "/var/lib/abnix/report-credentials.toml";
      description = ''
        The credentials of the reports: an absolute path to a TOML file
        (`access_key_id`, `secret_access_key`, optional `session_token`) with
        mode 0600, of a key that can only write the reports, normally on the
        rw partition. A path, not a systemd credential: the update, check
        and mark-good units all read it from the one config.toml. A string,
        not a Nix path, so nothing is ever copied into the store.
      '';
    };

    reportBucket = mkOption {
      type = types.nullOr name;
      default = pure.defaults.reportBucket;
      example = "fleet-reports";
      description = "The bucket the reports go to; `null`: `abnix.bucket`.";
    };

    tries = mkOption {
      type = types.ints.between 1 9;
      default = pure.defaults.tries;
      description = "Boot attempts a new (trial) version gets before the boot loader falls back.";
    };

    reboot = mkOption {
      type = types.enum [
        "immediate"
        "window"
        "never"
      ];
      default = pure.defaults.reboot;
      description = ''
        When to reboot into a freshly installed version: right away, inside
        {option}`abnix.rebootWindow`, or never (it boots at the next reboot).
      '';
    };

    rebootWindow = mkOption {
      type = types.nullOr dailyWindow;
      default = pure.defaults.rebootWindow;
      example = "02:00-04:00";
      description = "The daily window (local time) for `reboot = \"window\"`.";
    };

    checkInterval = mkOption {
      type = durationOfAtLeast pure.limits.minCheckIntervalSeconds;
      default = pure.defaults.checkInterval;
      example = "15min";
      description = ''
        How often the update timer checks the bucket after the check at boot:
        a whole number of at most 8 digits, alone for seconds or with one unit
        `s`, `m` or `min`, `h`, `d` (`90s`, `15min`, `6h`, `1d`), at least a
        minute. The same text goes into the timer unit and into
        `/etc/abnix/config.toml`, and both read it alike (docs/cli.md).
      '';
    };

    checkJitter = mkOption {
      type = duration;
      default = pure.defaults.checkJitter;
      description = ''
        Random delay added to each check (systemd's RandomizedDelaySec), so a
        fleet that boots together does not hit the bucket together. A
        duration as in {option}`abnix.checkInterval`; `"0"` turns it off.
      '';
    };

    successUnits = mkOption {
      type = types.listOf unitName;
      default = pure.defaults.successUnits;
      example = [
        "cage-tty1.service"
        "kiosk-web.service"
      ];
      description = ''
        Units that must be up before the booted version is marked good: they
        are required by and ordered before `boot-complete.target`, which
        `abnix-mark-good.service` waits for.
      '';
    };

    healthTimeout = mkOption {
      type = types.nullOr (durationOfAtLeast 1);
      default = pure.defaults.healthTimeout;
      description = ''
        Reboot when `boot-complete.target` is not reached this long after
        boot, so a trial version that never becomes healthy uses up its tries
        and the boot loader falls back. A duration as in
        {option}`abnix.checkInterval`; `null` turns it off. A running update
        postpones it by a minute at a time: a host that is good but unhealthy
        may be fetching a fix.
      '';
    };

    bootloader = mkOption {
      type = types.enum [
        "grub"
        "systemd-boot"
      ];
      default = if pkgs.stdenv.hostPlatform.isx86 then "grub" else "systemd-boot";
      defaultText = lib.literalExpression ''if pkgs.stdenv.hostPlatform.isx86 then "grub" else "systemd-boot"'';
      description = ''
        The boot loader abnix-install sets up: GRUB (BIOS and UEFI) or
        systemd-boot (UEFI only).
      '';
    };

    slotSize = mkOption {
      type = size;
      default = pure.defaults.slotSize;
      description = "Size of each of the two slots; every version image must fit.";
    };

    espSize = mkOption {
      type = size;
      default = pure.defaults.espSize;
      description = "Size of the EFI system partition (boot loaders, both slots' kernels and initrds).";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions =
      let
        windowProblem = pure.checkRebootWindow { inherit (cfg) reboot rebootWindow; };
        # The updater refuses such a config (core's config.rs).
        revokedButTrusted = lib.intersectLists cfg.revokedKeys (cfg.trustedKeys ++ cfg.recoveryKeys);
      in
      [
        {
          assertion = windowProblem == null;
          message = toString windowProblem;
        }
        {
          assertion = revokedButTrusted == [ ];
          message = "abnix.revokedKeys must not hold keys that abnix.trustedKeys or abnix.recoveryKeys trust: ${toString revokedButTrusted}";
        }
        {
          assertion = !lib.hasPrefix builtins.storeDir cfg.credentialsFile;
          message = "abnix.credentialsFile must not be in the Nix store: secrets never go into an image.";
        }
        {
          assertion = (cfg.bucket == null) == (cfg.channel == null);
          message = "abnix.bucket and abnix.channel are both set or both null (an air-gapped host): the updater takes both or neither.";
        }
        {
          assertion = cfg.report -> cfg.bucket != null;
          message = "abnix.report needs abnix.bucket: an air-gapped host (abnix.bucket = null) has no bucket to write reports to.";
        }
        {
          assertion = cfg.report -> cfg.reportCredentialsFile != null;
          message = "abnix.report needs abnix.reportCredentialsFile: reports are written with credentials of their own.";
        }
        {
          assertion = cfg.report || (cfg.reportCredentialsFile == null && cfg.reportBucket == null);
          message = "abnix.reportCredentialsFile and abnix.reportBucket need abnix.report = true.";
        }
        {
          assertion = !lib.hasPrefix builtins.storeDir (toString cfg.reportCredentialsFile);
          message = "abnix.reportCredentialsFile must not be in the Nix store: secrets never go into an image.";
        }
      ];

    # abnix installs and switches boot loaders itself; NixOS must neither
    # build nor install one. The toplevel still builds: without a boot loader
    # NixOS only prints a warning on switch, and switching is off below.
    boot.loader.grub.enable = mkForce false;
    boot.loader.systemd-boot.enable = mkForce false;

    # A version never changes on the device: no switch-to-configuration, no
    # Nix (the store is the read-only slot, there is no database to write).
    system.switch.enable = mkDefault false;
    nix.enable = mkDefault false;

    # The etc overlay needs systemd in stage 1, which also lets the units
    # below prepare the rw partition before the root is switched to.
    boot.initrd.systemd.enable = true;
    system.etc.overlay = {
      enable = true;
      mutable = true;
    };

    # Users from a declarative description at each boot. Their files live on
    # the rw partition so UIDs stay stable from one version to the next (files
    # under /var and /home keep their owners).
    services.userborn = {
      enable = mkDefault true;
      passwordFilesLocation = mkDefault "/var/lib/nixos";
    };

    boot.tmp.useTmpfs = mkDefault true;

    fileSystems = {
      "/" = {
        device = "/dev/disk/by-uuid/${rootId}";
        fsType = cfg.fsType;
        options = [ "ro" ];
        # The image is verified by hash when it is written; fsck must not
        # touch it (and there is no fsck for erofs).
        noCheck = true;
      };

      # The etc overlay keeps its upper layer in /.rw-etc (etc-activation.nix):
      # a tmpfs there makes /etc writable on a read-only root and discards
      # every change at reboot.
      "/.rw-etc" = {
        fsType = "tmpfs";
        options = [ "mode=0755" ];
        neededForBoot = true;
      };

      ${rwMountPoint} = {
        device = "/dev/disk/by-partlabel/${pure.defaults.rwPartLabel}";
        fsType = "ext4";
        neededForBoot = true;
      };
    }
    // lib.mapAttrs (mountPoint: _mode: {
      device = "${rwMountPoint}${mountPoint}";
      fsType = "none";
      options = [ "bind" ];
      depends = [ rwMountPoint ];
      # Mounted in stage 1 so activation and the users service find them.
      neededForBoot = true;
    }) rwBinds;

    boot.initrd.systemd.services = {
      # The upstream unit creates the overlay's upper and work directories;
      # they must go onto the tmpfs above, not onto the read-only root.
      rw-etc.unitConfig.RequiresMountsFor = [ "/sysroot/.rw-etc" ];

      # A fresh (or reformatted) abnix-rw has no var/, home/, root/ yet.
      abnix-rw-layout = {
        description = "abnix: directories of the rw partition";
        unitConfig = {
          DefaultDependencies = false;
          RequiresMountsFor = [ "/sysroot${rwMountPoint}" ];
        };
        requiredBy = rwBindUnits;
        before = rwBindUnits;
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = lib.mapAttrsToList (
            mountPoint: mode: "/bin/mkdir -p -m ${mode} /sysroot${rwMountPoint}${mountPoint}"
          ) rwBinds;
        };
      };

      # /etc starts empty at every boot, but the machine id must not change:
      # journald names its directory on /var after it, DHCP identifies the
      # host by it. It lives next to abnix's state and is copied into /etc
      # before systemd starts from the real root.
      abnix-machine-id = {
        description = "abnix: persistent machine id";
        unitConfig = {
          DefaultDependencies = false;
          RequiresMountsFor = [
            "/sysroot/etc"
            "/sysroot/var"
          ];
        };
        wantedBy = [ "initrd.target" ];
        before = [ "initrd.target" ];
        serviceConfig.Type = "oneshot";
        script = ''
          saved=/sysroot${pure.defaults.stateDir}/machine-id
          if [ ! -s "$saved" ]; then
            mkdir -p "$(dirname "$saved")"
            tr -d '-' < /proc/sys/kernel/random/uuid > "$saved.tmp"
            mv "$saved.tmp" "$saved"
          fi
          cp "$saved" /sysroot/etc/machine-id
        '';
      };
    };

    environment.etc."abnix/config.toml".text = pure.deviceConfig cfg;

    # IMAGE_ID and IMAGE_VERSION in /etc/os-release (nixos/modules/misc/
    # version.nix), where hostnamectl and monitoring look: the channel and
    # the version number. An air-gapped host follows no channel: no
    # IMAGE_ID unless the user sets one (its bundles are for no channel).
    system.image = {
      id = lib.mkIf (cfg.channel != null) (mkDefault (pure.imageId cfg.channel));
      version = mkDefault (toString cfg.version);
    };
    environment.systemPackages = [ cfg.package ];

    # On systemd-boot, systemd's own generator would pull in
    # systemd-bless-boot.service for the counted entries abnix writes, and it
    # would rename them behind abnix's back: abnix-mark-good owns that step.
    systemd.generators.systemd-bless-boot-generator = "/dev/null";

    systemd.targets.boot-complete = {
      requires = cfg.successUnits;
      after = cfg.successUnits;
    };

    systemd.services = {
      # Like systemd-bless-boot.service: no default dependencies, so
      # multi-user.target is not held up while the success units start.
      abnix-mark-good = {
        description = "abnix: mark the booted version good";
        documentation = [ "man:abnix-update(8)" ];
        wantedBy = [ "multi-user.target" ];
        requires = [ "boot-complete.target" ];
        after = [
          "local-fs.target"
          "boot-complete.target"
        ];
        conflicts = [ "shutdown.target" ];
        before = [ "shutdown.target" ];
        unitConfig.DefaultDependencies = false;
        # Only on a boot through abnix's boot loader, whose entries all carry
        # abnix.slot= (like rauc-mark-good.service's guard).
        unitConfig.ConditionKernelCommandLine = "abnix.slot";
        # No network, no capabilities: the ESP through the disk's block
        # device, the update lock in /var/lib/abnix.
        serviceConfig = sandbox // offline // blockDevices // {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${update} mark-good ${withConfig}";
          TimeoutStartSec = "5min";
          StateDirectory = "abnix";
          CapabilityBoundingSet = "";
        };
      };

      # Started by its timer only, so nothing waits for it at boot. The
      # updater itself refuses to update from a trial that is not yet good.
      # An air-gapped host has no bucket to poll: `install --bundle` is run
      # by hand.
      abnix-update = lib.mkIf (cfg.bucket != null) {
        description = "abnix: install a newer version from the bucket";
        documentation = [ "man:abnix-update(8)" ];
        wants = [ "network-online.target" ];
        after = [
          "network-online.target"
          "abnix-mark-good.service"
        ];
        serviceConfig =
          sandbox
          // blockDevices
          // {
            Type = "oneshot";
            ExecStart = "${update} update ${withConfig}";
            # 4: a version was installed and waits for its reboot (docs/cli.md);
            # SIGTERM: the reboot it asked for stopped it (reboot = "immediate"),
            # which a oneshot service counts as a failure unless told.
            SuccessExitStatus = "4 SIGTERM";
            # The updater reports its progress as STATUS=; systemd ignores
            # that from a oneshot service unless allowed (systemd.service(5)).
            NotifyAccess = "main";
            # Above the updater's own deadline (update_deadline, 6h by default;
            # an hour above abnix.updateDeadline below).
            TimeoutStartSec = "7h";
            # The host's own work comes first.
            Nice = 19;
            IOSchedulingClass = "idle";
            # The state and the update lock.
            StateDirectory = "abnix";
            # credentials = "profile" (and "chain") read the AWS profile files
            # in root's home.
            ProtectHome = "read-only";
            # credentials = "systemd": the AWS shared credentials file as a
            # credential; nothing when there is none (docs/cli.md).
            LoadCredential = "abnix.aws-credentials";
            # `systemctl reboot` through logind, which lets callers with
            # CAP_SYS_BOOT reboot without asking polkit.
            CapabilityBoundingSet = "CAP_SYS_BOOT";
            # The bucket; sd_notify, systemctl and the journal.
            RestrictAddressFamilies = "AF_UNIX AF_INET AF_INET6";
            # adjtimex reads whether the clock is synchronized (trustClock);
            # without CAP_SYS_TIME it sets nothing. ProtectClock= would deny it.
            SystemCallFilter = sandbox.SystemCallFilter ++ [ "adjtimex" ];
          }
          // lib.optionalAttrs (cfg.updateDeadline != null) {
            TimeoutStartSec = timeoutAbove cfg.updateDeadline;
          };
      };

      # A template written to a larger disk grows abnix-rw on its first boot;
      # on every other boot this finds nothing to do.
      abnix-grow = {
        description = "abnix: grow abnix-rw to the end of the disk";
        documentation = [ "man:abnix-update(8)" ];
        wantedBy = [ "multi-user.target" ];
        after = [ "local-fs.target" ];
        conflicts = [ "shutdown.target" ];
        before = [ "shutdown.target" ];
        unitConfig.DefaultDependencies = false;
        path = [ pkgs.e2fsprogs ];
        # The GPT through the disk's block device, BLKPG for the partition's
        # new size (CAP_SYS_ADMIN); resize2fs grows the mounted filesystem
        # through an ioctl on its mount point, which must be writable, and
        # the kernel asks for CAP_SYS_RESOURCE.
        serviceConfig = sandbox // offline // blockDevices // {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${update} grow ${withConfig}";
          ReadWritePaths = rwMountPoint;
          CapabilityBoundingSet = "CAP_SYS_ADMIN CAP_SYS_RESOURCE";
        };
      };

      abnix-health-deadline = lib.mkIf (cfg.healthTimeout != null) {
        description = "abnix: reboot when boot-complete.target is not reached in time";
        path = [ config.systemd.package ];
        # A shell and systemctl, which asks logind (CAP_SYS_BOOT spares it
        # polkit) or systemd to reboot.
        serviceConfig = sandbox // offline // {
          Type = "oneshot";
          # A postponed deadline (75) is tried again: the timer fires once.
          Restart = "on-failure";
          RestartSec = "1min";
          PrivateDevices = true;
          CapabilityBoundingSet = "CAP_SYS_BOOT";
        };
        script = ''
          if systemctl is-active --quiet boot-complete.target; then
            exit 0
          fi
          # A oneshot service is "activating" while it runs, never "active".
          if [ "$(systemctl is-active abnix-update.service)" = activating ]; then
            echo "boot-complete.target not reached, but an update is running: trying again in a minute"
            exit 75
          fi
          echo "boot-complete.target not reached in time: rebooting so the boot loader can fall back"
          systemctl reboot
        '';
      };
    };

    systemd.timers = {
      abnix-update = lib.mkIf (cfg.bucket != null) {
        description = "abnix: check for updates at boot and periodically";
        documentation = [ "man:abnix-update(8)" ];
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnBootSec = "1min";
          OnUnitActiveSec = cfg.checkInterval;
          RandomizedDelaySec = cfg.checkJitter;
        };
      };

      abnix-health-deadline = lib.mkIf (cfg.healthTimeout != null) {
        description = "abnix: deadline for boot-complete.target";
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnBootSec = cfg.healthTimeout;
          AccuracySec = "1s";
        };
      };
    };
  };
}
