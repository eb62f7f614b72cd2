# The parts of abnix's Nix side that need no nixpkgs: builtins only.
#
# The host module and the builders use these functions, and nix/check.sh
# evaluates them with `nix-instantiate --eval --strict` (no nixpkgs on CI),
# writing their results to nix/testdata/ where the Rust side parses them with
# its real parsers. Keeping one copy here means the module, the builders and
# the cross-check can never disagree.
let
  inherit (builtins)
    concatStringsSep
    elemAt
    filter
    genList
    hashString
    isBool
    isInt
    isList
    isString
    length
    map
    match
    replaceStrings
    substring
    toString
    ;

  stringToCharacters = text: genList (i: substring i 1 text) (builtins.stringLength text);

  kib = 1024;
  mib = 1024 * kib;

  sizeUnits = {
    "" = 1;
    K = kib;
    M = mib;
    G = 1024 * mib;
    T = 1024 * 1024 * mib;
  };

  # Seconds per unit of a duration (patterns.duration); "" is seconds.
  durationUnits = {
    "" = 1;
    s = 1;
    m = 60;
    min = 60;
    h = 3600;
    d = 86400;
  };

  alignUp = alignment: n: (n + alignment - 1) / alignment * alignment;
  alignDown = alignment: n: n / alignment * alignment;

  # GPT with the usual 128 entries of 128 bytes (UEFI spec 2.10 §5.3.1), the
  # size every partitioning tool writes and the layout code assumes.
  gptEntriesBytes = 128 * 128;

  # Variant bits 10xx (RFC 9562 §4.1) for the first hex digit of the 4th group.
  variantDigit = {
    "0" = "8";
    "1" = "9";
    "2" = "a";
    "3" = "b";
    "4" = "8";
    "5" = "9";
    "6" = "a";
    "7" = "b";
    "8" = "8";
    "9" = "9";
    "a" = "a";
    "b" = "b";
    "c" = "8";
    "d" = "9";
    "e" = "a";
    "f" = "b";
  };

  tomlString =
    s:
    "\""
    + replaceStrings [ "\\" "\"" "\n" "\r" "\t" ] [ "\\\\" "\\\"" "\\n" "\\r" "\\t" ] s
    + "\"";

  tomlValue =
    v:
    if isBool v then
      (if v then "true" else "false")
    else if isInt v then
      toString v
    else if isString v then
      tomlString v
    else if isList v then
      "[" + concatStringsSep ", " (map tomlValue v) + "]"
    else
      throw "abnix: cannot write ${builtins.typeOf v} as a TOML value";

  # An optional list key: left out of the TOML when empty.
  nonEmpty = list: if list == [ ] then null else list;

  # A flat TOML document from an ordered list of { name, value } entries;
  # entries whose value is null are left out (optional keys).
  toTOML =
    entries:
    concatStringsSep "" (
      map (entry: "${entry.name} = ${tomlValue entry.value}\n") (
        filter (entry: entry.value != null) entries
      )
    );

  uuidPattern = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";
in
rec {
  # Regular expressions shared by the module's option types and the checks.
  patterns = {
    uuid = uuidPattern;
    # Sizes as the command lines take them: bytes, or K/M/G/T (powers of 1024).
    size = "[0-9]+[KMGT]?";
    # Durations, the same grammar as core's parse_duration (docs/cli.md):
    # whole seconds, or a whole number with one unit. Each is also a systemd
    # time span of the same length (systemd.time(7): "m" is minutes there
    # too), so one value serves a timer unit and config.toml. At most 8
    # digits: within systemd's range, and no overflow in Nix's integers.
    duration = "[0-9]{1,8}(s|m|min|h|d)?";
    # A daily window in local time, as config.toml's reboot_window.
    rebootWindow = "([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]";
    # Public keys in Nix's name:base64 format (32-byte ed25519 key).
    publicKey = "[A-Za-z0-9._-]+:[A-Za-z0-9+/]{43}=";
    # A bucket or channel name as config.toml takes it (core's config.rs):
    # not empty, no whitespace, no '/'.
    name = "[^[:space:]/]+";
    # config.toml's endpoint: an http:// or https:// URL.
    endpoint = "https?://[^[:space:]]+";
    # config.toml's min_transfer_rate: SIZE/DURATION, e.g. 64K/60s (core's
    # config.rs); at most 6 digits of size, so that no unit overflows.
    transferRate = "[0-9]{1,6}[KMGT]?/[0-9]{1,8}(s|m|min|h|d)?";
    # os-release(5)'s IMAGE_ID and IMAGE_VERSION: lower-case letters, digits,
    # ".", "_" and "-".
    osReleaseImage = "[a-z0-9._-]+";
    # A systemd unit name, as NixOS's unit options take it
    # (nixos/lib/systemd-lib.nix, unitNameType).
    unitName = "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";
  };

  # Limits the Rust side enforces on option values, in the options' units.
  limits = {
    # core's config::MIN_CHECK_INTERVAL.
    minCheckIntervalSeconds = 60;
  };

  # Defaults of the abnix.* options, as plain data.
  defaults = {
    channel = "stable";
    prefix = "abnix";
    region = "us-east-1";
    endpoint = null;
    pathStyle = false;
    credentialsFile = "/var/lib/abnix/credentials.toml";
    report = false;
    reportCredentialsFile = null;
    reportBucket = null;
    tries = 3;
    reboot = "immediate";
    rebootWindow = null;
    checkInterval = "6h";
    checkJitter = "30min";
    healthTimeout = "15min";
    successUnits = [ ];
    fsType = "erofs";
    slotSize = "4G";
    espSize = "512M";
    # The updater's own defaults (docs/cli.md) where these are null: the
    # key is then left out of config.toml.
    recoveryKeys = [ ];
    revokedKeys = [ ];
    trustClock = null;
    checkDeadline = null;
    updateDeadline = null;
    minTransferRate = null;
    stateDir = "/var/lib/abnix";
    configFile = "/etc/abnix/config.toml";
    # GPT partition names of DESIGN §2.
    rwPartLabel = "abnix-rw";
  };

  # "4G" -> 4294967296; throws with the offending text otherwise.
  parseSize =
    text:
    let
      parts = match "([0-9]+)([KMGT]?)" text;
    in
    if parts == null then
      throw "abnix: '${text}' is not a size (bytes, or a number with K, M, G or T)"
    else
      builtins.fromJSON (elemAt parts 0) * sizeUnits.${elemAt parts 1};

  # "15min" -> 900; throws with the offending text otherwise.
  parseDuration =
    text:
    let
      parts = match "0*([0-9]+)(s|m|min|h|d)?" text;
      unit = elemAt parts 1;
    in
    if match patterns.duration text == null then
      throw "abnix: '${text}' is not a duration (whole seconds, or a whole number with s, m or min, h or d, such as 90s, 15min, 6h, 1d)"
    else
      # Leading zeros go: JSON numbers have none.
      builtins.fromJSON (elemAt parts 0) * durationUnits.${if unit == null then "" else unit};

  # A version number from Nix (7) or from the command line (--argstr version 7).
  parseVersion =
    version:
    if isInt version && version >= 0 then
      version
    else if isString version && match "0|[1-9][0-9]*" version != null then
      builtins.fromJSON version
    else
      throw "abnix: the version must be a whole number such as 7, not '${toString version}'";

  # The A/B layout of DESIGN §2 on a disk of `diskSize` bytes: every partition
  # starts and ends on a 1 MiB boundary, the first at 1 MiB, and abnix-rw takes
  # what is left before the backup GPT. Sizes are bytes or size strings.
  layout =
    {
      diskSize,
      sectorSize ? 512,
      espSize,
      slotSize,
    }:
    let
      toBytes = size: if isInt size then size else parseSize size;
      disk = toBytes diskSize;
      # The backup GPT: its entries, then its header in the very last sector.
      usableEnd = disk - gptEntriesBytes - sectorSize;
      sized = [
        {
          name = "abnix-bios";
          size = mib;
        }
        {
          name = "abnix-esp";
          size = alignUp mib (toBytes espSize);
        }
        {
          name = "abnix-a";
          size = alignUp mib (toBytes slotSize);
        }
        {
          name = "abnix-b";
          size = alignUp mib (toBytes slotSize);
        }
      ];
      place =
        placed: part:
        let
          start = if placed == [ ] then mib else (lastOf placed).start + (lastOf placed).size;
        in
        placed ++ [ (part // { inherit start; }) ];
      lastOf = list: elemAt list (length list - 1);
      fixed = builtins.foldl' place [ ] sized;
      rwStart = (lastOf fixed).start + (lastOf fixed).size;
      rwSize = alignDown mib usableEnd - rwStart;
    in
    if disk / sectorSize * sectorSize != disk then
      throw "abnix: disk size ${toString disk} is not a multiple of the sector size ${toString sectorSize}"
    else if rwSize <= 0 then
      throw "abnix: a disk of ${toString disk} bytes is too small for the layout (slots and ESP need ${toString rwStart} bytes plus room for abnix-rw)"
    else
      {
        inherit sectorSize;
        diskSize = disk;
        partitions = fixed ++ [
          {
            name = defaults.rwPartLabel;
            start = rwStart;
            size = rwSize;
          }
        ];
      };

  # The smallest disk whose layout leaves `rwSize` bytes for abnix-rw: the
  # size a template image is written with before it grows on a real disk.
  minimumDiskSize =
    {
      espSize,
      slotSize,
      rwSize,
    }:
    let
      fixed = mib + alignUp mib (parseSize espSize) + 2 * alignUp mib (parseSize slotSize);
    in
    # 1 MiB before the first partition (primary GPT) and 1 MiB after the last
    # one (backup GPT, rounded to the alignment).
    mib + fixed + alignUp mib (parseSize rwSize) + mib;

  # The kernel command line of a NixOS version (DESIGN §3), the way NixOS's
  # own bootloaders build it from `<toplevel>/init` and boot.kernelParams.
  cmdline =
    { toplevel, kernelParams }: concatStringsSep " " ([ "init=${toplevel}/init" ] ++ kernelParams);

  # A version-4-shaped UUID (RFC 9562 §5.4 bit layout) from the SHA-256 of a
  # string: stable for the same string, so builds stay reproducible.
  uuidFromString =
    text:
    let
      hex = hashString "sha256" text;
      digits = genList (i: substring i 1 hex) 32;
      digit =
        i:
        if i == 12 then
          "4"
        else if i == 16 then
          variantDigit.${elemAt digits 16}
        else
          elemAt digits i;
      group = from: count: concatStringsSep "" (genList (i: digit (from + i)) count);
    in
    "${group 0 8}-${group 8 4}-${group 12 4}-${group 16 4}-${group 20 12}";

  # The version id of DESIGN §3 when none is given: derived from the version
  # number and the store path of the system evaluated with a placeholder id
  # (the real id cannot come from the real system: the root filesystem UUID is
  # part of that system). A rebuild of the same system with the same number
  # gets the same id; a new number always gets a new id.
  versionId =
    { version, toplevel }:
    uuidFromString "abnix-version-id/v1:${toString version}:${builtins.unsafeDiscardStringContext toplevel}";

  # The id evaluated into the first (throwaway) evaluation of a host whose
  # id is derived: all zeroes but for the version and variant bits.
  placeholderVersionId = "00000000-0000-4000-8000-000000000000";

  isUuid = text: match uuidPattern text != null;

  # A version's label as `abnix-update pack` takes it (core's
  # meta::check_label): at most 200 bytes, no control characters.
  isLabel = text: builtins.stringLength text <= 200 && match ".*[[:cntrl:]].*" text == null;

  # A reboot window as config.toml's reboot_window takes it: HH:MM-HH:MM in
  # local time, and not empty (core's DailyWindow refuses a start equal to
  # its end).
  isRebootWindow =
    text:
    let
      parts = match "(.*)-(.*)" text;
    in
    match patterns.rebootWindow text != null && elemAt parts 0 != elemAt parts 1;

  # A min_transfer_rate as core's config.rs takes it: SIZE/DURATION, both
  # above 0.
  isTransferRate =
    text:
    let
      parts = match "(.*)/(.*)" text;
    in
    match patterns.transferRate text != null
    && parseSize (elemAt parts 0) > 0
    && parseDuration (elemAt parts 1) > 0;

  # os-release's IMAGE_ID for a channel: lower case, every character
  # os-release(5) does not allow there turned into "-".
  imageId =
    channel:
    let
      upper = stringToCharacters "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
      lower = stringToCharacters "abcdefghijklmnopqrstuvwxyz";
      # Bytes: a multi-byte character becomes one "-" per byte.
      characters = stringToCharacters (replaceStrings upper lower channel);
    in
    concatStringsSep "" (
      map (c: if match patterns.osReleaseImage c != null then c else "-") characters
    );

  # /etc/abnix/config.toml (docs/cli.md) from the abnix.* settings. With
  # bucket = null (an air-gapped host) none of the bucket's keys: the
  # updater takes bucket and channel both or neither, and the rest would
  # only say where a bucket is that the host never reads.
  deviceConfig =
    settings:
    let
      ofBucket = value: if (settings.bucket or null) != null then value else null;
    in
    toTOML [
      {
        name = "endpoint";
        value = ofBucket settings.endpoint;
      }
      {
        name = "region";
        value = ofBucket settings.region;
      }
      {
        name = "bucket";
        value = ofBucket settings.bucket;
      }
      {
        name = "prefix";
        value = ofBucket settings.prefix;
      }
      {
        name = "channel";
        value = ofBucket settings.channel;
      }
      {
        name = "path_style";
        value = ofBucket settings.pathStyle;
      }
      {
        name = "credentials";
        value = ofBucket settings.credentialsFile;
      }
      {
        name = "trusted_keys";
        value = settings.trustedKeys;
      }
      # Off (the updater's default) leaves all three out.
      {
        name = "report";
        value = if settings.report or false then true else null;
      }
      {
        name = "report_credentials";
        value = settings.reportCredentialsFile or null;
      }
      {
        name = "report_bucket";
        value = settings.reportBucket or null;
      }
      {
        name = "recovery_keys";
        value = nonEmpty (settings.recoveryKeys or [ ]);
      }
      {
        name = "revoked_keys";
        value = nonEmpty (settings.revokedKeys or [ ]);
      }
      {
        name = "trust_clock";
        value = settings.trustClock or null;
      }
      {
        name = "tries";
        value = settings.tries;
      }
      {
        name = "reboot";
        value = settings.reboot;
      }
      {
        name = "reboot_window";
        value = settings.rebootWindow;
      }
      {
        name = "check_interval";
        value = settings.checkInterval;
      }
      {
        name = "check_deadline";
        value = settings.checkDeadline or null;
      }
      {
        name = "update_deadline";
        value = settings.updateDeadline or null;
      }
      {
        name = "min_transfer_rate";
        value = settings.minTransferRate or null;
      }
      {
        name = "state_dir";
        value = defaults.stateDir;
      }
    ];

  # abnix-install's `arch` (docs/cli.md) for a Nix system double such as
  # stdenv.hostPlatform.system; throws for a platform abnix does not support.
  installerArch =
    system:
    let
      arches = {
        "x86_64-linux" = "x86_64";
        "aarch64-linux" = "aarch64";
      };
    in
    arches.${system}
      or (throw "abnix: hosts run on x86_64-linux or aarch64-linux, not '${toString system}'");

  # The file `abnix-install --config` reads on the installer ISO and in the
  # template build: the flag names with `_` for `-` (docs/cli.md). `arch` is
  # the host's (installerArch), whatever machine runs abnix-install.
  # Optional tool paths may be null.
  installerConfig =
    settings:
    toTOML [
      {
        name = "bundle";
        value = settings.bundle;
      }
      {
        name = "arch";
        value = settings.arch;
      }
      {
        name = "slot_size";
        value = settings.slotSize;
      }
      {
        name = "esp_size";
        value = settings.espSize;
      }
      {
        name = "bootloader";
        value = settings.bootloader;
      }
      {
        name = "wipe";
        value = settings.wipe;
      }
      {
        name = "allow_removable";
        value = settings.allowRemovable;
      }
      {
        name = "trusted_key";
        value = settings.trustedKeys;
      }
      {
        name = "grub_mkimage";
        value = settings.grubMkimage;
      }
      {
        name = "grub_bios_dir";
        value = settings.grubBiosDir;
      }
      {
        name = "grub_efi_dir";
        value = settings.grubEfiDir;
      }
      {
        name = "systemd_boot_efi";
        value = settings.systemdBootEfi;
      }
      {
        name = "countdown";
        value = settings.countdown;
      }
    ];

  # What the Nix side knows about a version before `pack` signs it; the
  # `version` output writes it as version.json next to the artifacts.
  versionDescription =
    {
      version,
      id,
      label,
      fsType,
      cmdline,
    }:
    {
      inherit
        version
        id
        label
        cmdline
        ;
      fs = fsType;
    };

  # The repository paths cargo needs to build the workspace described by
  # `cargoToml` (the parsed root Cargo.toml): the manifest, the lock file and
  # every member. nix/package.nix builds from exactly these.
  cargoSources = cargoToml: [
    "Cargo.toml"
    "Cargo.lock"
  ]
  ++ cargoToml.workspace.members;

  # Used by the module's assertions: the text of a value's problem, or null.
  checkRebootWindow =
    { reboot, rebootWindow }:
    if reboot == "window" && rebootWindow == null then
      "abnix.rebootWindow must be set (\"HH:MM-HH:MM\") when abnix.reboot is \"window\""
    else if reboot != "window" && rebootWindow != null then
      "abnix.rebootWindow is only used when abnix.reboot is \"window\" (it is \"${reboot}\")"
    else
      null;
}
