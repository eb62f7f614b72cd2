# Stands in for nixpkgs' nixos/modules/profiles/all-hardware.nix (imported
# from modulesPath by the installer and examples/kiosk). The real one adds
# kernel modules and firmware, none of which abnix's checks look at.
{ }
