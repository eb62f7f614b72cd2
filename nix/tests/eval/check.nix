# The flake's checks.<system>.module-eval: the evaluation nix/check.sh runs
# with the vendored nixpkgs lib, here with the flake's own nixpkgs lib (the
# release a user builds with). Refusals are only checked to fail (tryEval
# does not give the message; nix/check.sh checks the messages).
{ pkgs }:
let
  inherit (pkgs) lib;
  evaluation = import ./. { inherit lib; };
  refused = lib.mapAttrs (
    _: refusal: !(builtins.tryEval (builtins.deepSeq refusal.report refusal.report)).success
  ) evaluation.refusals;
  src = lib.fileset.toSource {
    root = ../../..;
    fileset = lib.fileset.unions [
      ../../../systemd
      ./check.py
      ../../testdata/module-configs.json
    ];
  };
in
pkgs.runCommand "abnix-module-eval"
  {
    nativeBuildInputs = [
      pkgs.bash
      pkgs.python3
    ];
    cases = builtins.toJSON evaluation.cases;
    refusals = builtins.toJSON refused;
    passAsFile = [
      "cases"
      "refusals"
    ];
  }
  ''
    python3 ${src}/nix/tests/eval/check.py --cases "$casesPath" --refusals "$refusalsPath" \
      --configs module-configs.json
    diff -u ${src}/nix/testdata/module-configs.json module-configs.json
    touch "$out"
  ''
