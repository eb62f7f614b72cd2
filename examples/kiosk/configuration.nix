# A kiosk as an abnix host: Firefox in kiosk mode under the cage Wayland
# compositor, showing a small web app that serves this machine's own update
# status. Build and test it as examples/kiosk/README.md shows.
{
  config,
  lib,
  pkgs,
  modulesPath,
  ...
}:
let
  # The web app: one page that shows the version it belongs to and, every few
  # seconds, what `abnix-update status --json` says about the slots.
  site = pkgs.writeTextDir "index.html" ''
    <!doctype html>
    <html>
      <head>
        <meta charset="utf-8">
        <title>${lib.escapeXML config.abnix.label}</title>
        <style>
          body { font: 2rem sans-serif; margin: 3rem; background: #10243e; color: #f4f4f4; }
          pre { font-size: 1rem; background: #0a1828; padding: 1rem; }
        </style>
      </head>
      <body>
        <h1>${lib.escapeXML config.abnix.label}</h1>
        <p>version ${toString config.abnix.version} &middot; channel ${lib.escapeXML config.abnix.channel}</p>
        <pre id="status">waiting for the first status&hellip;</pre>
        <script>
          async function refresh() {
            try {
              const response = await fetch("status.json", { cache: "no-store" });
              document.getElementById("status").textContent =
                JSON.stringify(await response.json(), null, 2);
            } catch (error) {
              document.getElementById("status").textContent = "no status yet: " + error;
            }
          }
          refresh();
          setInterval(refresh, 5000);
        </script>
      </body>
    </html>
  '';
  siteDir = "/run/kiosk-web";
  port = 8080;
in
{
  # The installer puts this on machines nobody has seen: bring the drivers.
  imports = [ (modulesPath + "/profiles/all-hardware.nix") ];

  networking.hostName = "kiosk";
  time.timeZone = "UTC";
  system.stateVersion = "25.11";

  abnix = {
    # Where versions come from. As written, a local S3 server as QEMU's user
    # network sees the host machine (README: "Publish a new version"); for a
    # fleet, your endpoint and bucket. The bucket's key is not part of the
    # system: it is put into /var/lib/abnix/credentials.toml on the kiosk's
    # rw partition (abnix.credentialsFile's default), as the README shows.
    endpoint = "http://10.0.2.2:9000";
    region = "us-east-1";
    bucket = "fleet";
    channel = "kiosk";
    pathStyle = true;
    # The repository's test key (nix/tests/abnix-test.secret), so that the
    # example builds and the demo runs as is. For a fleet: your own key's
    # public half, from `abnix-update keygen`.
    trustedKeys = [ "abnix-test:tpREIUigjfOYfBehsogk4+ZDL7tjppLJU1UUyeJpkdc=" ];
    # A kiosk that cannot show its page is not healthy.
    successUnits = [
      "kiosk-web.service"
      "cage-tty1.service"
    ];
    # Short enough to watch an update happen; a fleet in business hours would
    # rather use reboot = "window" with a rebootWindow at night.
    reboot = "immediate";
    checkInterval = "15min";
    checkJitter = "2min";
  };

  networking.useNetworkd = true;
  # Any one interface online is enough to look for updates.
  systemd.network.wait-online.anyInterface = true;

  users.users.kiosk = {
    isNormalUser = true;
    description = "Kiosk display";
  };

  services.cage = {
    enable = true;
    user = "kiosk";
    program = "${pkgs.firefox}/bin/firefox --kiosk --private-window http://127.0.0.1:${toString port}/";
  };

  # Up only once it answers, so boot-complete.target means "the page is there".
  systemd.services.kiosk-web = {
    description = "Kiosk web app";
    wantedBy = [ "multi-user.target" ];
    before = [ "cage-tty1.service" ];
    serviceConfig = {
      DynamicUser = true;
      RuntimeDirectory = baseNameOf siteDir;
      # Kept while the status service below writes into it.
      RuntimeDirectoryPreserve = true;
      ExecStartPre = "${pkgs.coreutils}/bin/cp ${site}/index.html ${siteDir}/";
      ExecStart = "${pkgs.python3}/bin/python3 -m http.server ${toString port} --bind 127.0.0.1 --directory ${siteDir}";
      ExecStartPost = "${pkgs.curl}/bin/curl --silent --fail --output /dev/null --retry 30 --retry-connrefused --retry-delay 1 http://127.0.0.1:${toString port}/";
    };
  };

  # The slots' state, for the page; root reads abnix's state.
  systemd.services.kiosk-status = {
    description = "Kiosk: publish the update status for the page";
    after = [ "kiosk-web.service" ];
    requires = [ "kiosk-web.service" ];
    serviceConfig.Type = "oneshot";
    script = ''
      ${config.abnix.package}/bin/abnix-update status --json > ${siteDir}/status.json.tmp
      chmod 0644 ${siteDir}/status.json.tmp
      mv ${siteDir}/status.json.tmp ${siteDir}/status.json
    '';
  };
  systemd.timers.kiosk-status = {
    wantedBy = [ "timers.target" ];
    timerConfig = {
      OnBootSec = "20s";
      OnUnitActiveSec = "30s";
    };
  };
}
