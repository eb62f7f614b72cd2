# Evaluates nix/modules/host.nix and nix/modules/installer-iso.nix with
# lib.evalModules, against the NixOS option declarations of ./nixos.nix, for
# the kiosk example and for edge cases. nix/check.sh runs it with nixpkgs'
# lib from nix/vendor/, the flake's checks.<system>.module-eval with the
# flake's nixpkgs; ./check.py checks the results.
#
#   cases      name -> what the evaluation gives (JSON-able): the files in
#              /etc, the units as sections of directives, the mounts, the
#              boot loader and /etc settings
#   refusals   name -> { report; message }: evaluating `report` must fail
#              with an error that contains `message`, as a NixOS user would
#              see it (a type error, a conflict, a failed assertion)
{ lib }:
let
  stub = import ./packages.nix;
  pure = import ../../lib/pure.nix;
  inherit (stub) pkgs;

  testKey = "abnix-test:tpREIUigjfOYfBehsogk4+ZDL7tjppLJU1UUyeJpkdc=";
  # nix/testdata/fixtures.nix's second key, for rotation.
  rotatedKey = "fleet-2027:MNVdRNZ9AUZZdYpapleQNVL9nqpdMMX2LfV+YEe9kA8=";
  # Generated with `abnix-update keygen`: a recovery key and a revoked one.
  recoveryKey = "fleet-recovery:DVMlqrtmS04G/Ad3sFcUXIwo2MAEvdkkC/vBP2ZShCM=";
  oldKey = "fleet-2025:pM86aJwYOjb97dV8+Nto2d7oM9gFDUkcH+PQE0323Y0=";

  # nixos/lib/utils.nix's escapeSystemdPath, as systemd.unit(5) describes
  # it: "/" becomes "-", other characters than ASCII alphanumerics, ":", "_"
  # and "." (and a leading ".") become \xNN.
  escapeSystemdPath =
    path:
    let
      trimmed = lib.concatStringsSep "/" (lib.filter (part: part != "") (lib.splitString "/" path));
      hex = c: "\\x${lib.toLower (lib.fixedWidthString 2 "0" (lib.toHexString (lib.strings.charToInt c)))}";
      escape =
        i: c:
        if c == "/" then
          "-"
        else if builtins.match "[A-Za-z0-9:_]" c != null || (c == "." && i > 0) then
          c
        else
          hex c;
    in
    if trimmed == "" then "-" else lib.concatStrings (lib.imap0 escape (lib.stringToCharacters trimmed));

  evaluate =
    modules:
    (lib.evalModules {
      modules = [
        ./nixos.nix
        {
          _module.args = {
            inherit pkgs;
            utils = { inherit escapeSystemdPath; };
          };
        }
      ]
      ++ modules;
      # As nixos/lib/eval-config-minimal.nix passes it.
      specialArgs.modulesPath = ./modules;
    }).config;

  # nixos/modules/system/activation/top-level.nix: failed assertions stop the
  # build with this message (lib.asserts.checkAssertWarn).
  checkAssertions = config: lib.asserts.checkAssertWarn config.assertions config.warnings;

  enabled = lib.filterAttrs (_: unit: unit.enable);
  install =
    unit:
    lib.optionalAttrs (unit.wantedBy != [ ]) { WantedBy = unit.wantedBy; }
    // lib.optionalAttrs (unit.requiredBy != [ ]) { RequiredBy = unit.requiredBy; };
  # A unit as sections of directives, the way nixos/lib/systemd-lib.nix
  # writes it (serviceToUnit, timerToUnit, targetToUnit). NixOS turns
  # wantedBy and requiredBy into .wants/.requires links rather than an
  # [Install] section; they are reported as one, which is what those links
  # are for a unit file that is enabled.
  sections =
    kind: directives: unit:
    lib.filterAttrs (_: section: section != { }) {
      Unit = unit.unitConfig;
      ${kind} = directives;
      Install = install unit;
    };
  serviceSections =
    unit:
    let
      environment = lib.mapAttrsToList (name: value: "${name}=${value}") (
        lib.filterAttrs (_: value: value != null) unit.environment
      );
    in
    sections "Service" (
      unit.serviceConfig
      // lib.optionalAttrs (environment != [ ]) {
        Environment = environment ++ lib.toList (unit.serviceConfig.Environment or [ ]);
      }
    ) unit;
  named = suffix: lib.mapAttrs' (name: lib.nameValuePair "${name}.${suffix}");
  units =
    systemd:
    named "service" (lib.mapAttrs (_: serviceSections) (enabled systemd.services))
    // named "timer" (lib.mapAttrs (_: unit: sections "Timer" unit.timerConfig unit) (enabled systemd.timers))
    // named "target" (lib.mapAttrs (_: unit: sections "Target" { } unit) (enabled systemd.targets));
  jobScripts =
    services:
    lib.listToAttrs (
      lib.mapAttrsToList (_: unit: lib.nameValuePair unit.jobScript.path unit.jobScript.text) (
        lib.filterAttrs (_: unit: unit.jobScript != null) services
      )
    );

  report =
    config:
    checkAssertions config {
      etc = lib.mapAttrs (_: file: file.text) (lib.filterAttrs (_: file: file.enable) config.environment.etc);
      units = units config.systemd;
      initrdUnits = lib.mapAttrs' (name: unit: lib.nameValuePair "${name}.service" (serviceSections unit)) (
        enabled config.boot.initrd.systemd.services
      );
      scripts = jobScripts config.systemd.services // jobScripts config.boot.initrd.systemd.services;
      fileSystems = lib.mapAttrs (_: fs: {
        inherit (fs)
          device
          fsType
          options
          depends
          noCheck
          neededForBoot
          ;
      }) config.fileSystems;
      # The installer's medium (iso-image.nix's options; none on a host).
      isoImage = config.isoImage or { };
      settings = {
        grub = config.boot.loader.grub.enable;
        systemdBoot = config.boot.loader.systemd-boot.enable;
        initrdSystemd = config.boot.initrd.systemd.enable;
        etcOverlay = config.system.etc.overlay;
        switch = config.system.switch.enable;
        nix = config.nix.enable;
        tmpOnTmpfs = config.boot.tmp.useTmpfs;
        userborn = config.services.userborn;
        inherit (config.systemd) generators;
        # os-release's IMAGE_ID and IMAGE_VERSION.
        inherit (config.system) image;
        systemPackages = map (package: package.name) config.environment.systemPackages;
        # The abnix tools' store path, which the unit files have as /usr/bin.
        packagePath = pkgs.abnix.outPath;
      };
    };

  # What mk-abnix.nix sets, and the least a host must.
  base = {
    abnix = {
      enable = true;
      version = 1;
      package = pkgs.abnix;
    };
    system.stateVersion = "26.05";
  };
  required = {
    abnix.bucket = "fleet";
    abnix.trustedKeys = [ testKey ];
  };
  host = modules: [
    ../../modules/host.nix
    base
  ]
  ++ modules;
  hostReport =
    modules:
    let
      config = evaluate (host modules);
    in
    report config // { abnix = hostSettings config; };
  # Every abnix.* value (the builders read those that no unit or file
  # has, so a bad one must fail here too); the Rust side reads those of
  # config.toml back from it.
  hostSettings = config: lib.optionalAttrs config.abnix.enable (removeAttrs config.abnix [ "package" ]);

  installer = [
    ../../modules/installer-iso.nix
    {
      abnixInstaller = {
        package = pkgs.abnix;
        bundle = stub.package "abnix-stable-1-bundle";
        # pure.installerConfig's output for the fixtures (nix/testdata),
        # for the bundle where the ISO has it.
        installConfig =
          bundle:
          builtins.replaceStrings [ "/iso/abnix/bundle" ] [ bundle ] (
            builtins.readFile ../../testdata/install.toml
          );
      };
    }
  ];

  # A host whose one setting is wrong, refused with `message`.
  refusedHost = settings: message: {
    report = hostReport [ (lib.recursiveUpdate required settings) ];
    inherit message;
  };
  # `expected` starts the type's description; `entry` names a list's
  # element as the module system does.
  refusedOption =
    option: value: expected:
    refusedHost (lib.setAttrByPath (lib.splitString "." option) value)
      "A definition for option `${option}' is not of type `${expected}";
  refusedEntry =
    option: value: expected:
    refusedHost (lib.setAttrByPath (lib.splitString "." option) value)
      "A definition for option `${option}.\"[definition 1-entry 1]\"' is not of type `${expected}";
  conflict = option: settings: refusedHost settings "The option `${option}' has conflicting definition values";
  failedAssertion = settings: message: refusedHost settings "Failed assertions:\n- ${message}";
  duration = "string matching the pattern ${pure.patterns.duration}";
in
{
  cases = {
    # Only what a host must set: every other option at its default. The
    # units are compared with systemd/, which holds the defaults.
    minimal = hostReport [ required ];

    kiosk = hostReport [ ../../../examples/kiosk/configuration.nix ];

    # Every abnix.* option at the end of its range the types allow and the
    # Rust side reads: the largest, the longest, the most.
    limits-high = hostReport [
      {
        abnix = {
          endpoint = "https://s3.eu-central-1.example.com:9000/path";
          region = "eu-central-1";
          bucket = "a.bucket-name_with.all-allowed.characters";
          prefix = "deep/prefix with \"quotes\", \\ back\tslash and ünïcode";
          channel = "Channel-9_x.y";
          pathStyle = true;
          credentialsFile = "/var/lib/abnix/credentials.toml";
          trustedKeys = [
            testKey
            rotatedKey
          ];
          tries = 9;
          reboot = "window";
          rebootWindow = "23:59-00:00";
          checkInterval = "99999999d";
          checkJitter = "99999999d";
          healthTimeout = "99999999d";
          successUnits = [
            "app.service"
            "sockets.target"
            "data.mount"
            "templated@instance.service"
          ];
          fsType = "ext4";
          bootloader = "systemd-boot";
          slotSize = "1T";
          espSize = "4096M";
          versionId = "602ca684-2bac-458d-8517-a23b37fff6a6";
          label = "kiosk 2026-12-07 \"release\" ✓";
          recoveryKeys = [ recoveryKey ];
          revokedKeys = [ oldKey ];
          trustClock = "when-synchronized";
          checkDeadline = "99999999d";
          updateDeadline = "99999999d";
          minTransferRate = "999999T/99999999d";
          report = true;
          reportCredentialsFile = "/var/lib/abnix/report-credentials.toml";
          reportBucket = "fleet-reports";
        };
      }
    ];

    # The other end: the least of each.
    limits-low = hostReport [
      {
        abnix = {
          endpoint = "http://s";
          bucket = "b";
          trustedKeys = [ testKey ];
          prefix = "";
          channel = "c";
          credentialsFile = "anonymous";
          tries = 1;
          reboot = "never";
          checkInterval = "60";
          checkJitter = "0";
          healthTimeout = "1";
          label = "";
          trustClock = "always";
          checkDeadline = "1";
          updateDeadline = "1";
          minTransferRate = "1/1";
        };
      }
    ];

    # Credentials from the AWS chain, no health deadline, a window that is
    # the whole day but a minute, and a user who asks for boot loaders abnix
    # must keep off.
    chain-no-deadline = hostReport [
      required
      {
        abnix = {
          credentialsFile = "chain";
          healthTimeout = null;
          reboot = "window";
          rebootWindow = "00:00-23:59";
          checkInterval = "1min";
        };
        boot.loader.grub.enable = true;
        boot.loader.systemd-boot.enable = true;
      }
    ];

    # An air-gapped host: no bucket, so no channel, no bucket keys in
    # config.toml, no update timer; a health deadline and mark-good as
    # everywhere.
    air-gapped = hostReport [
      {
        abnix = {
          bucket = null;
          trustedKeys = [ testKey ];
          # Set, but of the bucket: left out of config.toml.
          endpoint = "https://s3.example.com";
          prefix = "kiosks";
          credentialsFile = "anonymous";
        };
      }
    ];

    # The module imported but not enabled changes nothing.
    disabled = report (evaluate [
      ../../modules/host.nix
      { system.stateVersion = "26.05"; }
    ]);

    installer = report (evaluate installer);
  };

  refusals = {
    no-bucket = {
      report = hostReport [ { abnix.trustedKeys = [ testKey ]; } ];
      message = "The option `abnix.bucket' was accessed but has no value defined";
    };
    air-gapped-report = failedAssertion {
      abnix.bucket = null;
      abnix.report = true;
      abnix.reportCredentialsFile = "/var/lib/abnix/report-credentials.toml";
    } "abnix.report needs abnix.bucket: an air-gapped host (abnix.bucket = null) has no bucket to write reports to.";
    air-gapped-with-channel = failedAssertion {
      abnix.bucket = null;
      abnix.channel = "kiosk";
    } "abnix.bucket and abnix.channel are both set or both null (an air-gapped host): the updater takes both or neither.";
    bucket-without-channel = failedAssertion {
      abnix.channel = null;
    } "abnix.bucket and abnix.channel are both set or both null (an air-gapped host): the updater takes both or neither.";
    no-keys = refusedOption "abnix.trustedKeys" [ ] "non-empty (list of string matching the pattern ${pure.patterns.publicKey})";
    bad-key = refusedEntry "abnix.trustedKeys" [
      "abnix-test:not-a-key"
    ] "string matching the pattern ${pure.patterns.publicKey}";
    bucket-with-slash = refusedOption "abnix.bucket" "fleet/a" "null or string matching the pattern ${pure.patterns.name}";
    empty-bucket = refusedOption "abnix.bucket" "" "null or string matching the pattern ${pure.patterns.name}";
    channel-with-space = refusedOption "abnix.channel" "my kiosk" "null or string matching the pattern ${pure.patterns.name}";
    endpoint-without-scheme = refusedOption "abnix.endpoint" "s3.example.com" "null or string matching the pattern ${pure.patterns.endpoint}";
    tries-0 = refusedOption "abnix.tries" 0 "integer between 1 and 9 (both inclusive)";
    tries-10 = refusedOption "abnix.tries" 10 "integer between 1 and 9 (both inclusive)";
    version-negative = refusedOption "abnix.version" (-1) "unsigned integer, meaning >=0";
    check-interval-under-a-minute = refusedOption "abnix.checkInterval" "59s" "duration of at least 60 s";
    check-interval-combined = refusedOption "abnix.checkInterval" "1h30m" "duration of at least 60 s";
    check-interval-too-long = refusedOption "abnix.checkInterval" "123456789" "duration of at least 60 s";
    jitter-capital-m = refusedOption "abnix.checkJitter" "5M" duration;
    health-timeout-0 = refusedOption "abnix.healthTimeout" "0" "null or duration of at least 1 s";
    reboot-unknown = refusedOption "abnix.reboot" "sometimes" "one of \"immediate\", \"window\", \"never\"";
    window-hour-24 = refusedOption "abnix.rebootWindow" "24:00-01:00" "null or daily window";
    window-empty = refusedOption "abnix.rebootWindow" "02:00-02:00" "null or daily window";
    credentials-relative = refusedOption "abnix.credentialsFile" "credentials.toml" "one of \"chain\", \"systemd\", \"profile\", \"anonymous\" or string matching the pattern /.+";
    fs-type-unknown = refusedOption "abnix.fsType" "btrfs" "one of \"erofs\", \"ext4\"";
    bootloader-unknown = refusedOption "abnix.bootloader" "lilo" "one of \"grub\", \"systemd-boot\"";
    slot-size-bytes-suffix = refusedOption "abnix.slotSize" "4GB" "string matching the pattern ${pure.patterns.size}";
    label-two-lines = refusedOption "abnix.label" "kiosk\n2" "one line of at most 200 bytes";
    label-too-long = refusedOption "abnix.label" (lib.strings.replicate 201 "x") "one line of at most 200 bytes";
    version-id-not-uuid = refusedOption "abnix.versionId" "kiosk-1" "null or string matching the pattern ${pure.patterns.uuid}";
    success-unit-without-suffix = refusedEntry "abnix.successUnits" [ "nginx" ] "systemd unit name";
    window-without-window = failedAssertion {
      abnix.reboot = "window";
    } "abnix.rebootWindow must be set (\"HH:MM-HH:MM\") when abnix.reboot is \"window\"";
    window-without-policy = failedAssertion {
      abnix.rebootWindow = "02:00-04:00";
    } "abnix.rebootWindow is only used when abnix.reboot is \"window\" (it is \"immediate\")";
    revoked-and-trusted = failedAssertion {
      abnix.revokedKeys = [ testKey ];
    } "abnix.revokedKeys must not hold keys that abnix.trustedKeys or abnix.recoveryKeys trust: ${testKey}";
    revoked-recovery-key = failedAssertion {
      abnix.recoveryKeys = [ recoveryKey ];
      abnix.revokedKeys = [ recoveryKey ];
    } "abnix.revokedKeys must not hold keys that abnix.trustedKeys or abnix.recoveryKeys trust: ${recoveryKey}";
    bad-recovery-key = refusedEntry "abnix.recoveryKeys" [
      "recovery:short"
    ] "string matching the pattern ${pure.patterns.publicKey}";
    trust-clock-unknown = refusedOption "abnix.trustClock" "never" "null or one of \"when-synchronized\", \"always\"";
    update-deadline-0 = refusedOption "abnix.updateDeadline" "0" "null or duration of at least 1 s";
    check-deadline-combined = refusedOption "abnix.checkDeadline" "1h30m" "null or duration of at least 1 s";
    transfer-rate-0 = refusedOption "abnix.minTransferRate" "0K/60s" "null or SIZE/DURATION, both above 0";
    transfer-rate-per-0 = refusedOption "abnix.minTransferRate" "64K/0" "null or SIZE/DURATION, both above 0";
    transfer-rate-without-duration = refusedOption "abnix.minTransferRate" "64K" "null or SIZE/DURATION, both above 0";
    transfer-rate-too-large = refusedOption "abnix.minTransferRate" "1234567T/1s" "null or SIZE/DURATION, both above 0";
    credentials-in-store = failedAssertion {
      abnix.credentialsFile = "${builtins.storeDir}/abc-credentials.toml";
    } "abnix.credentialsFile must not be in the Nix store: secrets never go into an image.";
    report-without-credentials = failedAssertion {
      abnix.report = true;
    } "abnix.report needs abnix.reportCredentialsFile: reports are written with credentials of their own.";
    report-credentials-without-report = failedAssertion {
      abnix.reportCredentialsFile = "/var/lib/abnix/report-credentials.toml";
    } "abnix.reportCredentialsFile and abnix.reportBucket need abnix.report = true.";
    report-bucket-without-report = failedAssertion {
      abnix.reportBucket = "fleet-reports";
    } "abnix.reportCredentialsFile and abnix.reportBucket need abnix.report = true.";
    report-credentials-in-store = failedAssertion {
      abnix.report = true;
      abnix.reportCredentialsFile = "${builtins.storeDir}/abc-report-credentials.toml";
    } "abnix.reportCredentialsFile must not be in the Nix store: secrets never go into an image.";
    report-credentials-relative = refusedOption "abnix.reportCredentialsFile" "report.toml" "null or string matching the pattern /.+";
    own-root = conflict "fileSystems.\"/\".device" { fileSystems."/".device = "/dev/sda2"; };
    own-var = conflict "fileSystems.\"/var\".device" { fileSystems."/var".device = "/dev/sda3"; };
    scripted-stage-1 = conflict "boot.initrd.systemd.enable" { boot.initrd.systemd.enable = false; };
    immutable-etc = conflict "system.etc.overlay.mutable" { system.etc.overlay.mutable = false; };
    installer-without-bundle = {
      report = report (evaluate [
        ../../modules/installer-iso.nix
        {
          abnixInstaller = {
            package = pkgs.abnix;
            installConfig = bundle: "bundle = \"${bundle}\"\n";
          };
        }
      ]);
      message = "The option `abnixInstaller.bundle' was accessed but has no value defined";
    };
    installer-config-not-a-function = {
      report = report (evaluate [
        ../../modules/installer-iso.nix
        {
          abnixInstaller = {
            package = pkgs.abnix;
            bundle = stub.package "abnix-stable-1-bundle";
            installConfig = "bundle = \"/iso/abnix/bundle\"\n";
          };
        }
      ]);
      message = "A definition for option `abnixInstaller.installConfig' is not of type `function that evaluates to a(n) strings concatenated with";
    };
  };
}
