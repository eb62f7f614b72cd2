# A NixOS VM test of the whole story, with a Garage S3 server:
#   1. the installer ISO of version 1 installs onto an empty disk and powers off;
#   2. the disk boots version 1 from slot a through GRUB (SeaBIOS);
#   3. version 2 is published, the host installs it, reboots into it (slot b)
#      and marks it good;
#   4. version 3, whose success unit fails, is published and installed: it
#      never reaches boot-complete.target, uses up its tries, and the boot
#      loader falls back to version 2, which then refuses to install 3 again.
#
# It runs with `nix flake check` or `nix build .#checks.x86_64-linux.vm-test`
# on a machine with Nix and KVM. It cannot run in this repository's CI (no
# nixpkgs there): nix/check.sh only parses and lints it.
#
# The host VMs are not test nodes: they boot from the disk abnix wrote, so
# the test starts them with create_machine and its own QEMU command line.
# The test reboots them itself (machine.reboot()), so abnix.reboot is
# "never" and the health deadline is off: the driver reconnects only to
# reboots it asked for.
{ pkgs, mkAbnix }:
let
  inherit (pkgs) lib;
  qemu-common = import "${pkgs.path}/nixos/lib/qemu-common.nix" { inherit lib pkgs; };

  # A key for tests only (nix/tests/abnix-test.secret): it signs nothing real.
  testSigningKey = "${./abnix-test.secret}";
  testPublicKey = "abnix-test:tpREIUigjfOYfBehsogk4+ZDL7tjppLJU1UUyeJpkdc=";
  hostAddress = "192.168.1.10";
  tries = 2;
in
pkgs.testers.runNixOSTest (
  { config, ... }:
  let
    garageAddress = config.nodes.garage.networking.primaryIPAddress;

    versionOf =
      { version, healthy }:
      mkAbnix {
        inherit version;
        hostSystem = pkgs.stdenv.hostPlatform.system;
        signingKeyFile = testSigningKey;
        modules = [
          "${pkgs.path}/nixos/modules/testing/test-instrumentation.nix"
          "${pkgs.path}/nixos/modules/profiles/qemu-guest.nix"
          {
            networking = {
              hostName = "host";
              useDHCP = false;
              interfaces.eth0.ipv4.addresses = [
                {
                  address = hostAddress;
                  prefixLength = 24;
                }
              ];
            };
            abnix = {
              endpoint = "http://${garageAddress}:3900";
              region = "garage";
              bucket = "fleet";
              channel = "test";
              pathStyle = true;
              trustedKeys = [ testPublicKey ];
              reboot = "never";
              healthTimeout = null;
              inherit tries;
              successUnits = [ "abnix-test-health.service" ];
              slotSize = "2G";
              espSize = "256M";
            };
            # Stands in for the host's real work: version 3 never gets healthy.
            systemd.services.abnix-test-health = {
              wantedBy = [ "multi-user.target" ];
              serviceConfig = {
                Type = "oneshot";
                RemainAfterExit = true;
                ExecStart = "${pkgs.coreutils}/bin/${if healthy then "true" else "false"}";
              };
            };
            system.stateVersion = lib.trivial.release;
          }
        ];
      };

    v1 = versionOf {
      version = 1;
      healthy = true;
    };
    v2 = versionOf {
      version = 2;
      healthy = true;
    };
    v3 = versionOf {
      version = 3;
      healthy = false;
    };

    qemu = qemu-common.qemuBinary pkgs.qemu_test;
  in
  {
    name = "abnix-install-update-fallback";

    nodes.garage =
      { pkgs, ... }:
      {
        services.garage = {
          enable = true;
          # The module has no default (pkgs/tools/filesystems/garage/default.nix
          # defines garage_1 and garage_2).
          package = pkgs.garage_2;
          settings = {
            replication_factor = 1;
            rpc_bind_addr = "[::]:3901";
            rpc_public_addr = "127.0.0.1:3901";
            rpc_secret = "5c1915fa04d0b6739675c61bf5907eb0fe3d9c69850c83820f51b4d25d13868c";
            s3_api = {
              s3_region = "garage";
              api_bind_addr = "[::]:3900";
              root_domain = ".s3.garage";
            };
          };
        };
        networking.firewall.allowedTCPPorts = [ 3900 ];
        # Garage wants 1 GiB free; the published images need room too.
        virtualisation.diskSize = 8 * 1024;
        virtualisation.memorySize = 2048;
      };

    testScript = ''
      import glob
      import os
      import re
      import subprocess

      start_all()

      with subtest("a Garage bucket and a key for the fleet"):
          garage.wait_for_unit("garage.service")
          garage.wait_for_open_port(3900)
          node_id = garage.succeed("garage node id").split("@")[0].strip()
          garage.succeed(f"garage layout assign -z test -c 4G {node_id}")
          garage.succeed("garage layout apply --version 1")
          garage.succeed("garage bucket create fleet")
          key = garage.succeed("garage key create abnix")
          key_id = re.search(r"Key ID:\s*(\S+)", key, re.IGNORECASE).group(1)
          secret = re.search(r"Secret key:\s*(\S+)", key, re.IGNORECASE).group(1)
          garage.succeed("garage bucket allow --read --write --owner fleet --key abnix")

      def publish(upload):
          garage.succeed(
              f"AWS_ACCESS_KEY_ID={key_id} AWS_SECRET_ACCESS_KEY={secret} "
              f"ABNIX_SIGNING_KEY=${testSigningKey} {upload}/bin/abnix-upload"
          )

      disk = os.path.join(os.environ.get("TMPDIR", "/tmp"), "abnix-disk.qcow2")
      subprocess.run(["${pkgs.qemu_test}/bin/qemu-img", "create", "-f", "qcow2", disk, "16G"], check=True)

      with subtest("the installer ISO installs version 1 and powers off"):
          iso = glob.glob("${v1.installer}/iso/*.iso")[0]
          installer = create_machine(
              f"${qemu} -m 2048 -nic none -cdrom {iso} -boot d "
              f"-drive file={disk},if=virtio,format=qcow2",
              name="installer",
          )
          installer.start()
          installer.wait_for_shutdown()

      host = create_machine(
          f"${qemu} -m 2048 -drive file={disk},if=virtio,format=qcow2 -boot c "
          "-device virtio-net-pci,netdev=vlan1,mac=52:54:00:12:01:0a "
          "-netdev vde,id=vlan1,sock=$QEMU_VDE_SOCKET_1",
          name="host",
      )

      def booted(version_id, slot):
          host.wait_for_unit("multi-user.target")
          host.succeed(f"test \"$(findmnt -no UUID /)\" = {version_id}")
          host.succeed(f"grep -qw abnix.slot={slot} /proc/cmdline")

      with subtest("the installed disk boots version 1 from slot a"):
          host.start(allow_reboot=True)
          booted("${v1.versionId}", "a")
          host.wait_for_unit("abnix-mark-good.service")
          host.succeed("test ! -w /nix/store/.")
          host.succeed("touch /etc/written-at-run-time && findmnt -no FSTYPE /etc | grep -qx overlay")
          host.succeed(
              "install -d -m 0755 /var/lib/abnix && "
              "umask 077 && "
              f"printf 'access_key_id = \"%s\"\\nsecret_access_key = \"%s\"\\n' {key_id} {secret} "
              "> /var/lib/abnix/credentials.toml"
          )

      with subtest("version 2 is installed into slot b and becomes good"):
          publish("${v2.upload}")
          host.succeed("systemctl start abnix-update.service")
          host.reboot()
          booted("${v2.versionId}", "b")
          host.wait_for_unit("abnix-mark-good.service")
          host.fail("test -e /etc/written-at-run-time")
          host.succeed("test -s /var/lib/abnix/credentials.toml")

      with subtest("version 3 never becomes healthy and the host falls back to 2"):
          publish("${v3.upload}")
          host.succeed("systemctl start abnix-update.service")
          host.reboot()
          booted("${v3.versionId}", "a")
          host.fail("systemctl is-active boot-complete.target")
          host.fail("systemctl is-active abnix-mark-good.service")
          # Each boot of the trial uses a try; then the boot loader goes back.
          for _ in range(${toString tries}):
              host.reboot()
              host.wait_for_unit("multi-user.target")
              if host.succeed("findmnt -no UUID /").strip() == "${v2.versionId}":
                  break
          booted("${v2.versionId}", "b")
          host.wait_for_unit("abnix-mark-good.service")

      with subtest("the failed version 3 is not installed again"):
          status, _ = host.execute("abnix-update check")
          t.assertEqual(status, 3, "abnix-update check must find nothing to do (exit 3)")
          host.succeed("abnix-update update")
          host.succeed("abnix-update status")
    '';
  }
)
