# Stand-ins for nixpkgs packages: what the modules need of a package is its
# store path (and that `types.package` takes it). Each gets a fixed, fake
# store path from its name, so evaluations are reproducible.
let
  package = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" name)}-${name}";
  };
  names = [
    "abnix"
    "coreutils"
    "curl"
    "e2fsprogs"
    "firefox"
    "python3"
    "systemd"
    "util-linux"
    "xterm"
  ];
in
{
  inherit package;

  # The `pkgs` module argument, for an x86_64 host.
  pkgs = builtins.listToAttrs (
    map (name: {
      inherit name;
      value = package name;
    }) names
  )
  // {
    stdenv.hostPlatform = {
      isx86 = true;
      system = "x86_64-linux";
    };
    writeTextDir = path: _text: package "text-${builtins.baseNameOf path}";
    writeShellApplication = { name, text, ... }: builtins.seq text (package name);
  };
}
