# Declarations of the NixOS options that nix/modules/host.nix,
# nix/modules/installer-iso.nix and examples/kiosk set or read, so that
# lib.evalModules can evaluate them without nixpkgs (which CI cannot fetch).
#
# Each is typed as nixpkgs declares it; the comment names the nixpkgs file
# that was read for it (the newest version the search index holds,
# nixos-unstable 2025–2026). Where NixOS derives settings from others
# (a unit's [Unit] lines from `after`, a job script from `script`, a mount's
# options from `neededForBoot` and `depends`), this does the same, so the
# evaluated units and mounts are the ones NixOS would generate. What NixOS
# adds on its own (its default PATH, X-Restart-Triggers, LOCALE_ARCHIVE) is
# left out: abnix does not set it. Descriptions are left out too.
#
# A NixOS option that the modules or the kiosk start to use must be declared
# here too, looked up in nixpkgs' source like the others; until it is, the
# evaluation stops with "The option `…' does not exist".
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;
  stub = import ./packages.nix;

  # nixos/lib/systemd-lib.nix, unitNameType: what a unit name looks like.
  unitName = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";
  unitNames = mkOption {
    type = types.listOf unitName;
    default = [ ];
  };

  # nixos/lib/systemd-unit-options.nix, unitOption: one directive's value;
  # list definitions are concatenated (repeated lines), others must agree.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      let
        defs' = lib.filterOverrides defs;
      in
      if lib.any (def: lib.isList def.value) defs' then
        lib.concatMap (def: lib.toList def.value) defs'
      else
        lib.mergeEqualOption loc defs';
  };
  directives = mkOption {
    type = types.attrsOf unitOption;
    default = { };
  };

  # The same file: `Type=` and `Restart=` of a service must be known values
  # (checkService), reported like nixpkgs' checkUnitConfig does.
  knownValues = {
    Type = [
      "exec"
      "simple"
      "forking"
      "oneshot"
      "dbus"
      "notify"
      "notify-reload"
      "idle"
    ];
    Restart = [
      "no"
      "on-success"
      "on-failure"
      "on-abnormal"
      "on-abort"
      "always"
    ];
  };
  serviceDirectives = types.addCheck (types.attrsOf unitOption) (
    attrs:
    let
      plain = lib.mapAttrs (
        _: value: if lib.elem (value._type or "") [ "override" "if" ] then value.content else value
      ) attrs;
      errors = lib.concatLists (
        lib.mapAttrsToList (
          name: allowed:
          lib.optional (
            plain ? ${name} && !lib.elem plain.${name} allowed
          ) "Systemd Service field `${name}' cannot have value `${toString plain.${name}}'."
        ) knownValues
      );
    in
    errors == [ ] || builtins.trace (lib.concatStringsSep "\n" errors) false
  );

  # systemd-unit-options.nix (commonUnitOptions, sharedOptions) with the
  # [Unit] lines systemd-lib.nix (unitConfig) derives from them.
  commonUnit =
    { config, ... }:
    {
      options = {
        enable = mkOption {
          type = types.bool;
          default = true;
        };
        description = mkOption {
          type = types.singleLineStr;
          default = "";
        };
        documentation = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        requires = unitNames;
        wants = unitNames;
        upholds = unitNames;
        after = unitNames;
        before = unitNames;
        bindsTo = unitNames;
        partOf = unitNames;
        conflicts = unitNames;
        requisite = unitNames;
        onFailure = unitNames;
        onSuccess = unitNames;
        wantedBy = unitNames;
        requiredBy = unitNames;
        upheldBy = unitNames;
        unitConfig = directives;
      };
      config.unitConfig =
        let
          line = name: list: lib.optionalAttrs (list != [ ]) { ${name} = toString list; };
        in
        line "Requires" config.requires
        // line "Wants" config.wants
        // line "Upholds" config.upholds
        // line "After" config.after
        // line "Before" config.before
        // line "BindsTo" config.bindsTo
        // line "PartOf" config.partOf
        // line "Conflicts" config.conflicts
        // line "Requisite" config.requisite
        // line "OnFailure" config.onFailure
        // line "OnSuccess" config.onSuccess
        // lib.optionalAttrs (config.description != "") { Description = config.description; }
        // line "Documentation" config.documentation;
    };

  # systemd-unit-options.nix (serviceOptions) and systemd-lib.nix
  # (serviceConfig, makeJobScript): `script` becomes ExecStart= of a bash
  # script that starts with `set -e`; `path` becomes Environment=PATH.
  service =
    { name, config, ... }:
    {
      imports = [ commonUnit ];
      options = {
        environment = mkOption {
          type = types.attrsOf (
            types.nullOr (
              types.oneOf [
                types.str
                types.path
                types.package
              ]
            )
          );
          default = { };
        };
        path = mkOption {
          type = types.listOf (
            types.oneOf [
              types.package
              types.str
            ]
          );
          default = [ ];
        };
        serviceConfig = mkOption {
          type = serviceDirectives;
          default = { };
        };
        script = mkOption {
          type = types.lines;
          default = "";
        };
        scriptArgs = mkOption {
          type = types.str;
          default = "";
        };
        # What the script's store path would hold: the evaluation reports it
        # so its commands can be compared with a unit file's.
        jobScript = mkOption {
          type = types.nullOr (types.attrsOf types.str);
          default = null;
          internal = true;
        };
      };
      config = lib.mkMerge [
        {
          environment.PATH = lib.mkIf (config.path != [ ]) (
            "${lib.makeBinPath config.path}:${lib.makeSearchPathOutput "bin" "sbin" config.path}"
          );
        }
        (lib.mkIf (config.script != "") (
          let
            script = "${(stub.package "unit-script-${name}-start").outPath}/bin/${name}-start";
          in
          {
            serviceConfig.ExecStart = "${script} ${config.scriptArgs}";
            jobScript = {
              path = script;
              text = "set -e\n${config.script}";
            };
          }
        ))
      ];
    };

  timer = {
    imports = [ commonUnit ];
    options.timerConfig = directives;
  };

  # nixos/modules/tasks/filesystems.nix (coreFileSystemOpts, fileSystemOpts;
  # their mount options for stage 1) and system/boot/stage-1.nix
  # (neededForBoot); nixos/lib/utils.nix (fsNeededForBoot).
  nonEmpty = s: builtins.match "[ \t\n]*" s == null;
  nonEmptyStr = types.addCheck types.str nonEmpty // {
    description = "string (with check: non-empty)";
  };
  noTrailingSlash = types.addCheck types.str (s: nonEmpty s && builtins.match ".+/" s == null) // {
    description = "string (with check: non-empty without trailing slash)";
  };
  pathsNeededForBoot = [
    "/"
    "/nix"
    "/nix/store"
    "/var"
    "/var/log"
    "/var/lib"
    "/var/lib/nixos"
    "/etc"
    "/usr"
  ];
  fileSystem =
    { name, config, ... }:
    let
      inInitrd = config.neededForBoot || lib.elem config.mountPoint pathsNeededForBoot;
    in
    {
      options = {
        mountPoint = mkOption {
          type = noTrailingSlash;
          default = name;
        };
        device = mkOption {
          type = types.nullOr nonEmptyStr;
          default = null;
        };
        fsType = mkOption {
          type = nonEmptyStr;
          default = "auto";
        };
        options = mkOption {
          type = types.nonEmptyListOf nonEmptyStr;
          default = [ "defaults" ];
        };
        depends = mkOption {
          type = types.listOf noTrailingSlash;
          default = [ ];
        };
        noCheck = mkOption {
          type = types.bool;
          default = false;
        };
        neededForBoot = mkOption {
          type = types.bool;
          default = false;
        };
      };
      config = {
        device = lib.mkIf (lib.elem config.fsType [
          "proc"
          "sysfs"
          "tmpfs"
          "ramfs"
          "devtmpfs"
          "devpts"
        ]) (lib.mkDefault config.fsType);
        options = lib.mkMerge [
          (lib.mkIf inInitrd [ "x-initrd.mount" ])
          (lib.mkIf (config.depends != [ ]) (
            map (
              path: "x-systemd.requires-mounts-for=${lib.optionalString inInitrd "/sysroot"}${path}"
            ) config.depends
          ))
        ];
      };
    };

  bool =
    default:
    mkOption {
      type = types.bool;
      inherit default;
    };
in
{
  options = {
    # nixos/modules/misc/assertions.nix
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };

    # system/boot/loader/grub/grub.nix (true unless a container);
    # loader/systemd-boot/systemd-boot.nix
    boot.loader.grub.enable = bool true;
    boot.loader.systemd-boot.enable = bool false;
    # system/activation/switchable-system.nix
    system.switch.enable = bool true;
    # services/system/nix-daemon.nix
    nix.enable = bool true;
    # system/boot/tmp.nix
    boot.tmp.useTmpfs = bool false;
    # system/etc/etc.nix
    system.etc.overlay.enable = bool false;
    system.etc.overlay.mutable = bool true;
    environment.etc = mkOption {
      type = types.attrsOf (
        types.submodule (
          { name, ... }:
          {
            options = {
              enable = bool true;
              target = mkOption {
                type = types.str;
                default = name;
              };
              text = mkOption {
                type = types.nullOr types.lines;
                default = null;
              };
            };
          }
        )
      );
      default = { };
    };
    # services/system/userborn.nix
    services.userborn.enable = bool false;
    services.userborn.passwordFilesLocation = mkOption {
      type = types.str;
      default = if config.system.etc.overlay.enable && !config.system.etc.overlay.mutable then "/var/lib/nixos" else "/etc";
    };
    # config/system-path.nix
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    fileSystems = mkOption {
      type = types.attrsOf (types.submodule fileSystem);
      default = { };
    };

    # system/boot/systemd/initrd.nix (stage 1 units have the same options)
    boot.initrd.systemd.enable = bool true;
    boot.initrd.systemd.services = mkOption {
      type = types.attrsOf (types.submodule service);
      default = { };
    };
    # system/boot/systemd.nix
    systemd.package = mkOption {
      type = types.package;
      default = pkgs.systemd;
    };
    systemd.generators = mkOption {
      type = types.attrsOf types.path;
      default = { };
    };
    systemd.services = mkOption {
      type = types.attrsOf (types.submodule service);
      default = { };
    };
    systemd.timers = mkOption {
      type = types.attrsOf (types.submodule timer);
      default = { };
    };
    systemd.targets = mkOption {
      type = types.attrsOf (types.submodule commonUnit);
      default = { };
    };

    # tasks/network-interfaces.nix
    networking.hostName = mkOption {
      type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$";
      default = "nixos";
    };
    networking.useNetworkd = bool false;
    # system/boot/networkd.nix
    systemd.network.wait-online.anyInterface = bool false;
    # misc/version.nix
    system.stateVersion = mkOption { type = types.str; };
    # misc/version.nix: IMAGE_ID and IMAGE_VERSION of /etc/os-release.
    system.image.id = mkOption {
      type = types.nullOr types.str;
      default = null;
    };
    system.image.version = mkOption {
      type = types.nullOr types.str;
      default = null;
    };
    # config/locale.nix
    time.timeZone = mkOption {
      type = types.nullOr (types.addCheck types.str (s: !lib.hasInfix " " s));
      default = null;
    };
    # services/ttys/getty.nix
    services.getty.autologinUser = mkOption {
      type = types.nullOr types.str;
      default = null;
    };
    # config/users-groups.nix
    users.users = mkOption {
      type = types.attrsOf (
        types.submodule {
          options = {
            isNormalUser = bool false;
            description = mkOption {
              type = types.passwdEntry types.str;
              default = "";
            };
          };
        }
      );
      default = { };
    };
    # services/wayland/cage.nix
    services.cage = {
      enable = bool false;
      user = mkOption {
        type = types.str;
        default = "demo";
      };
      program = mkOption {
        type = types.path;
        default = "${pkgs.xterm}/bin/xterm";
      };
    };
  };
}
