# The artifacts of one evaluated abnix host (DESIGN §3): the root image, the
# unsigned version, the signed bundle, the upload script, the template disk
# and the VM script. nix/lib/mk-abnix.nix evaluates the host and adds the
# installer ISO, which is a NixOS system of its own.
{
  # The host: an eval-config.nix result with abnix enabled and its id set.
  host,
  # The abnix tools for the build machine: pack and install run there.
  abnixBuild,
  # null, or a path outside the store, as a string (see nix/README.md).
  signingKeyFile,
  # Room for abnix-rw in the template; it grows to the real disk on boot.
  templateRwSize,
  # Keep the raw disk next to the qcow2 one in the template (full size in
  # the store, which keeps no holes).
  templateRaw,
  # abnix-install settings that are not host options.
  installer,
}:
let
  pure = import ../lib/pure.nix;
  inherit (host) config pkgs;
  inherit (pkgs) lib;
  buildPkgs = pkgs.buildPackages;
  cfg = config.abnix;
  toplevel = config.system.build.toplevel;

  id =
    if cfg.versionId != null then
      cfg.versionId
    else
      throw "abnix: the host has no version id; evaluate it through nix/lib/mk-abnix.nix, which derives one";
  # An air-gapped host (abnix.bucket = null) follows no channel.
  name = "abnix-${if cfg.channel != null then cfg.channel else "offline"}-${toString cfg.version}";

  cmdline = pure.cmdline {
    toplevel = "${toplevel}";
    inherit (config.boot) kernelParams;
  };

  # The shell and env links NixOS's activation would create: it cannot write
  # them into a read-only root, so they are part of the image.
  rootLinks = [
    {
      target = config.environment.binsh;
      path = "/bin/sh";
    }
  ]
  ++ lib.optional (config.environment.usrbinenv != null) {
    target = config.environment.usrbinenv;
    path = "/usr/bin/env";
  };

  # The links point into the system's closure (activation uses them too);
  # root-image.sh fails if one does not.
  closure = buildPkgs.closureInfo { rootPaths = [ toplevel ]; };

  image = buildPkgs.runCommand "${name}.${cfg.fsType}" {
    # abnix-mkimage (abnixBuild) writes the erofs or ext4 image itself (owner
    # and times included); fsck.erofs or e2fsck checks it.
    nativeBuildInputs = with buildPkgs; [
      abnixBuild
      erofs-utils
      e2fsprogs
    ];
    links = lib.concatMapStrings (link: "${link.target} ${link.path}\n") rootLinks;
    passAsFile = [ "links" ];
  } ''
    bash ${./root-image.sh} ${cfg.fsType} ${id} ${closure}/store-paths "$linksPath" "$out"
    size=$(stat -c %s "$out")
    if [ "$size" -gt ${toString (pure.parseSize cfg.slotSize)} ]; then
      echo "the ${cfg.fsType} image is $size bytes: it does not fit abnix.slotSize (${cfg.slotSize})" >&2
      exit 1
    fi
  '';

  versionJson = builtins.toJSON (
    pure.versionDescription {
      inherit (cfg) version label fsType;
      inherit id cmdline;
    }
  );

  # The unsigned version: everything `abnix-update pack` takes.
  version = buildPkgs.runCommand name { inherit cmdline versionJson; } ''
    mkdir "$out"
    ln -s ${image} "$out/image"
    ln -s ${toplevel}/kernel "$out/kernel"
    ln -s ${toplevel}/initrd "$out/initrd"
    printf '%s' "$cmdline" > "$out/cmdline"
    printf '%s\n' "$versionJson" > "$out/version.json"
  '';

  packArgs = lib.escapeShellArgs [
    "--image"
    "${version}/image"
    "--kernel"
    "${version}/kernel"
    "--initrd"
    "${version}/initrd"
    "--cmdline-file"
    "${version}/cmdline"
    "--version"
    (toString cfg.version)
    "--label"
    cfg.label
    "--id"
    id
    # Signed into the meta: devices of another architecture refuse it.
    "--arch"
    (pure.installerArch pkgs.stdenv.hostPlatform.system)
  ];

  # Signed inside the build, with the key read from a path that the sandbox
  # is allowed to see (extra-sandbox-paths): the key never enters the store,
  # only its path does. ed25519 signatures are deterministic, so the same
  # key gives the same bundle. The trusted keys are part of the derivation so
  # that a key rotation (which changes them) rebuilds it.
  bundle =
    if signingKeyFile == null then
      throw "abnix: the installer and the template contain a signed bundle: set signingKeyFile (see nix/README.md, \"Signing\")"
    else if !builtins.isString signingKeyFile then
      throw "abnix: signingKeyFile must be a string such as \"/etc/abnix/fleet.key\": a Nix path would be copied into the world-readable store"
    else
      buildPkgs.runCommand "${name}-bundle" {
        nativeBuildInputs = [ abnixBuild ];
        signingKey = signingKeyFile;
        inherit (cfg) trustedKeys;
      } ''
        if [ ! -r "$signingKey" ]; then
          echo "cannot read the signing key $signingKey inside the build sandbox; allow it with extra-sandbox-paths (nix/README.md, \"Signing\")" >&2
          exit 1
        fi
        abnix-update pack ${packArgs} --key "$signingKey" --out "$out"
      '';

  remoteArgs = lib.escapeShellArgs (
    [
      "--region"
      cfg.region
      "--bucket"
      cfg.bucket
      "--prefix"
      cfg.prefix
      "--channel"
      cfg.channel
    ]
    ++ lib.optional cfg.pathStyle "--path-style"
  );

  # publish refuses a bundle that the host's own trusted keys do not verify.
  trustedKeyArgs = lib.escapeShellArgs (
    lib.concatMap (key: [
      "--trusted-key"
      key
    ]) cfg.trustedKeys
  );

  # Signs at run time, so publishing needs no sandbox setup: the key is a
  # file named by $ABNIX_SIGNING_KEY on the machine that publishes.
  upload =
    if cfg.bucket == null then
      throw "abnix: an air-gapped host (abnix.bucket = null) has no bucket to upload to: take its bundle to the host and run abnix-update install --bundle"
    else
      uploadScript;
  uploadScript = buildPkgs.writeShellApplication {
    name = "abnix-upload";
    runtimeInputs = [
      abnixBuild
      buildPkgs.coreutils
    ];
    text = ''
      # Publishes ${name} (${cfg.label}) to ${cfg.bucket}/${cfg.prefix}/${cfg.channel}.
      # S3 credentials: the standard AWS chain (AWS_ACCESS_KEY_ID and
      # AWS_SECRET_ACCESS_KEY, a profile, instance metadata).
      # Arguments are passed to `abnix-update publish`, e.g. --keep 3.
      # $ABNIX_ENDPOINT replaces the hosts' endpoint where this machine
      # reaches the bucket at another address (a VM's 10.0.2.2 is the
      # publisher's 127.0.0.1); empty means AWS S3.
      key=''${ABNIX_SIGNING_KEY:?set ABNIX_SIGNING_KEY to the signing key file (name:base64, mode 0600)}
      endpoint=''${ABNIX_ENDPOINT-${lib.escapeShellArg (toString cfg.endpoint)}}
      work=$(mktemp -d)
      trap 'rm -rf "$work"' EXIT
      abnix-update pack ${packArgs} --key "$key" --out "$work/bundle"
      abnix-update publish --bundle "$work/bundle" --key "$key" ''${endpoint:+--endpoint "$endpoint"} ${remoteArgs} ${trustedKeyArgs} "$@"
    '';
  };

  # What abnix-install needs to set up the boot loader: GRUB's module
  # directories for the host (BIOS only on x86; arm64-efi on aarch64) and
  # grub-mkimage from `mkimagePkgs`, the machine that runs the installer
  # (one grub-mkimage builds for every platform); or systemd-boot.
  bootloaderFiles =
    mkimagePkgs:
    if cfg.bootloader == "grub" then
      {
        grubMkimage = "${mkimagePkgs.grub2}/bin/grub-mkimage";
        grubBiosDir =
          if pkgs.stdenv.hostPlatform.isx86 then "${pkgs.grub2}/lib/grub/${pkgs.grub2.grubTarget}" else null;
        grubEfiDir = "${pkgs.grub2_efi}/lib/grub/${pkgs.grub2_efi.grubTarget}";
        systemdBootEfi = null;
      }
    else
      {
        grubMkimage = null;
        grubBiosDir = null;
        grubEfiDir = null;
        systemdBootEfi = "${config.systemd.package}/lib/systemd/boot/efi/systemd-boot${pkgs.stdenv.hostPlatform.efiArch}.efi";
      };

  # The TOML file abnix-install reads with --config.
  installerConfig =
    {
      bundlePath,
      mkimagePkgs,
      countdown,
    }:
    pure.installerConfig (
      {
        bundle = bundlePath;
        # The host's, also where the build machine runs abnix-install (the
        # template of an aarch64 host cross-built on x86_64).
        arch = pure.installerArch pkgs.stdenv.hostPlatform.system;
        inherit (cfg)
          slotSize
          espSize
          bootloader
          trustedKeys
          ;
        inherit (installer) wipe allowRemovable;
        inherit countdown;
      }
      // bootloaderFiles mkimagePkgs
    );

  templateSize = pure.minimumDiskSize {
    inherit (cfg) espSize slotSize;
    rwSize = templateRwSize;
  };

  # A disk image ready to boot, written by abnix-install into a file in the
  # sandbox (no root, no loop device, no VM). Written to a bigger disk, it
  # grows abnix-rw on first boot. The raw disk is written in the build
  # directory, where it stays sparse; the store would keep it at full size
  # (the slots alone are twice abnix.slotSize), so only the small qcow2 is
  # kept unless templateRaw asks for the raw one too.
  template =
    buildPkgs.runCommand "${name}-template"
      {
        nativeBuildInputs = [
          abnixBuild
          buildPkgs.e2fsprogs
          buildPkgs.qemu
        ];
        installConfig = installerConfig {
          bundlePath = "${bundle}";
          mkimagePkgs = buildPkgs;
          countdown = 0;
        };
        passAsFile = [ "installConfig" ];
      }
      ''
        mkdir "$out"
        # GPT GUIDs from the version id, so the same version gives the same disk.
        abnix-install --config "$installConfigPath" \
          --file disk.raw --size ${toString templateSize} \
          --seed ${builtins.hashString "sha256" "abnix-template:${id}"}
        qemu-img convert -f raw -O qcow2 disk.raw "$out/disk.qcow2"
        ${lib.optionalString templateRaw ''mv disk.raw "$out/disk.raw"''}
      '';

  # Boots the template through its boot loader (systest/boot-disk.sh); writes go
  # to an overlay in the current directory, the store copy stays as it is.
  vm =
    let
      scripts = lib.fileset.toSource {
        root = ../../qemu;
        fileset = lib.fileset.unions [
          ../../systest/boot-disk.sh
          ../../systest/vm-common.sh
        ];
      };
      firmware = if cfg.bootloader == "grub" && pkgs.stdenv.hostPlatform.isx86 then "bios" else "uefi";
    in
    buildPkgs.writeShellApplication {
      name = "abnix-vm";
      runtimeInputs = [
        buildPkgs.qemu
        buildPkgs.coreutils
        buildPkgs.gnused
      ];
      text = ''
        # The overlay and UEFI variables stay in ./abnix-vm-disk between runs
        # (--fresh starts over); --size 32G shows abnix-grow fill a bigger disk.
        # The firmware is the guest's (AAVMF for aarch64), QEMU the build machine's.
        export OVMF_CODE=''${OVMF_CODE:-${pkgs.OVMF.fd.firmware}}
        export OVMF_VARS=''${OVMF_VARS:-${pkgs.OVMF.fd.variables}}
        exec bash ${scripts}/boot-disk.sh --disk ${template}/disk.qcow2 \
          --firmware ${firmware} --arch ${pkgs.stdenv.hostPlatform.qemuArch} "$@"
      '';
    };
in
{
  inherit
    image
    version
    bundle
    upload
    template
    vm
    installerConfig
    ;
}
