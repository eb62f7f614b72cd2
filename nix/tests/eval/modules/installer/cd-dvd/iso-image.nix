# Stands in for nixpkgs' nixos/modules/installer/cd-dvd/iso-image.nix (the
# installer ISO imports it from modulesPath): the options the installer sets,
# typed as that file declares them (`contents` has no type there).
{ lib, ... }:
{
  options.isoImage = {
    volumeID = lib.mkOption { type = lib.types.str; };
    makeEfiBootable = lib.mkOption {
      type = lib.types.bool;
      default = false;
    };
    makeUsbBootable = lib.mkOption {
      type = lib.types.bool;
      default = false;
    };
    contents = lib.mkOption { };
  };
}
