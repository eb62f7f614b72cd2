//! The Nix side computes some of what the Rust side computes (DESIGN §8.4):
//! nix/lib/pure.nix's outputs for fixed inputs are committed in nix/testdata
//! (nix/check.sh keeps them current). Here the updater's own code reads the same
//! inputs and must come to the same answers, so the two sides cannot drift.
//! (Every device and installer config in nix/testdata is also parsed by
//! abnix_updater::config's and abnix-install's own tests.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use abnix_core::units::{parse_duration, parse_size};
use abnix_formats::layout::{compute, min_disk_size, LayoutConfig};
use abnix_formats::meta::{check_cmdline, check_label};
use abnix_updater::config::{self, Config};
use abnix_updater::reboot_policy::RebootPolicy;
use abnix_updater::remote::CredentialSource;
use serde_json::Value;
use uuid::Uuid;

fn testdata_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../nix/testdata")
        .join(name)
}

fn testdata(name: &str) -> Value {
    let path = testdata_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// Sizes appear as Nix writes them: a number of bytes or a string like "4G".
fn size(value: &Value) -> u64 {
    match value {
        Value::Number(n) => n.as_u64().expect("a size is a non-negative integer"),
        Value::String(s) => parse_size(s).unwrap_or_else(|e| panic!("size {s:?}: {e}")),
        other => panic!("not a size: {other}"),
    }
}

#[test]
fn nix_computes_the_same_partition_layout_as_core() {
    let examples = testdata("layout.json");
    let examples = examples.as_array().expect("a list of examples");
    assert!(!examples.is_empty());
    for example in examples {
        let sector_size = example["sectorSize"].as_u64().unwrap() as u32;
        let mut config = LayoutConfig::new(size(&example["slotSize"]));
        config.esp_size = size(&example["espSize"]);
        let disk_size = size(&example["diskSize"]);
        let layout = compute(disk_size, sector_size, &config)
            .unwrap_or_else(|e| panic!("core refuses the layout Nix computed for {example}: {e}"));

        let nix = &example["layout"];
        assert_eq!(nix["diskSize"].as_u64(), Some(layout.disk_size));
        assert_eq!(
            nix["sectorSize"].as_u64(),
            Some(u64::from(layout.sector_size))
        );
        let nix_parts: Vec<(&str, u64, u64)> = nix["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap(),
                    p["start"].as_u64().unwrap(),
                    p["size"].as_u64().unwrap(),
                )
            })
            .collect();
        let core_parts: Vec<(&str, u64, u64)> = layout
            .partitions()
            .iter()
            .map(|p| (p.name, p.start, p.size))
            .collect();
        assert_eq!(nix_parts, core_parts, "for {example}");
    }
}

#[test]
fn a_template_disk_sized_by_nix_fits_cores_layout_exactly() {
    // The third example is pure.nix's minimumDiskSize for a 1G slot, a 256M
    // ESP and 64M of abnix-rw: the size a template image is written with.
    // Nix rounds it to whole MiB, so it may exceed core's bare minimum, but
    // core must accept it and give abnix-rw exactly the 64M asked for.
    let examples = testdata("layout.json");
    let template = &examples[2];
    let mut config = LayoutConfig::new(size(&template["slotSize"]));
    config.esp_size = size(&template["espSize"]);
    let sector_size = template["sectorSize"].as_u64().unwrap() as u32;
    let disk_size = size(&template["diskSize"]);
    assert!(disk_size >= min_disk_size(sector_size, &config));
    let layout = compute(disk_size, sector_size, &config).unwrap();
    assert_eq!(layout.rw.size, LayoutConfig::DEFAULT_MIN_RW_SIZE);
}

#[test]
fn the_nix_module_defaults_are_cores_defaults() {
    let defaults = testdata("defaults.json");
    assert_eq!(
        defaults["tries"].as_u64(),
        Some(u64::from(config::DEFAULT_TRIES))
    );
    assert_eq!(
        parse_duration(defaults["checkInterval"].as_str().unwrap()).unwrap(),
        config::DEFAULT_CHECK_INTERVAL
    );
    assert_eq!(
        defaults["stateDir"].as_str(),
        Some(config::DEFAULT_STATE_DIR)
    );
    assert_eq!(defaults["configFile"].as_str(), Some(config::DEFAULT_PATH));
    assert_eq!(size(&defaults["espSize"]), LayoutConfig::DEFAULT_ESP_SIZE);
}

#[test]
fn a_version_described_by_nix_is_one_pack_accepts() {
    let version = testdata("version.json");
    check_label(version["label"].as_str().unwrap()).expect("label");
    check_cmdline(version["cmdline"].as_str().unwrap()).expect("cmdline");
    version["id"]
        .as_str()
        .unwrap()
        .parse::<Uuid>()
        .expect("the id is a UUID");
    assert!(version["version"].as_u64().is_some());

    // Version ids Nix derives from the system: UUIDs, versions beyond 32 bits
    // included (meta's version is a u64).
    for entry in testdata("version-id.json").as_array().unwrap() {
        entry["id"].as_str().unwrap().parse::<Uuid>().expect("id");
        assert!(entry["version"].as_u64().is_some(), "{entry}");
    }
}

/// The duration options go into systemd units and, for checkInterval, into
/// config.toml: what the Nix option type accepts, core must read as the
/// same number of seconds, and what it refuses core must refuse.
#[test]
fn nix_and_core_read_durations_alike() {
    let durations = testdata("durations.json");
    let examples = durations["examples"].as_array().unwrap();
    assert!(examples.len() >= 10);
    for example in examples {
        let text = example["text"].as_str().unwrap();
        let nix = example["seconds"].as_u64();
        let core = parse_duration(text).ok().map(|d| d.as_secs());
        assert_eq!(core, nix, "{text:?}: core and the Nix option type disagree");
    }
    assert_eq!(
        Duration::from_secs(durations["minCheckIntervalSeconds"].as_u64().unwrap()),
        config::MIN_CHECK_INTERVAL
    );
}

/// examples/kiosk sets checkInterval = "15min": the config the module
/// writes from it is one abnix-update loads.
#[test]
fn a_config_with_a_check_interval_in_minutes_loads() {
    let config = Config::load(&testdata_path("config.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.check_interval, Duration::from_secs(15 * 60));
}

/// Every config.toml that nix/modules/host.nix generates in its evaluation
/// (nix/tests/eval: the kiosk example, defaults, an air-gapped host and every abnix.* option at
/// its limits; nix/check.sh keeps nix/testdata/module-configs.json current)
/// loads, and says what the abnix.* options it came from said.
#[test]
fn the_host_module_configs_load_with_their_settings() {
    let cases = testdata("module-configs.json");
    let cases = cases.as_array().expect("a list of cases");
    assert!(cases.len() >= 5, "only {} cases", cases.len());
    for case in cases {
        let name = case["case"].as_str().unwrap();
        let settings = &case["settings"];
        let text = case["toml"].as_str().unwrap();
        let config = Config::parse(text, Path::new(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let setting = |key: &str| {
            settings[key]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: {key}"))
        };

        // abnix.bucket = null: an air-gapped host, which the updater knows
        // by the config naming no bucket (and no channel).
        if settings["bucket"].is_null() {
            assert!(settings["channel"].is_null(), "{name}");
            assert!(config.bucket().is_err(), "{name}: a bucket");
        } else {
            let remote = config.bucket().unwrap();
            assert_eq!(
                remote.endpoint.as_deref(),
                settings["endpoint"].as_str(),
                "{name}"
            );
            assert_eq!(remote.region, setting("region"), "{name}");
            assert_eq!(remote.bucket, setting("bucket"), "{name}");
            assert_eq!(remote.prefix, setting("prefix"), "{name}");
            assert_eq!(remote.channel, setting("channel"), "{name}");
            assert_eq!(
                remote.path_style,
                settings["pathStyle"].as_bool().unwrap(),
                "{name}"
            );
            let credentials = match setting("credentialsFile") {
                "chain" => CredentialSource::Chain,
                "anonymous" => CredentialSource::Anonymous,
                path => CredentialSource::File(path.into()),
            };
            assert_eq!(remote.credentials, credentials, "{name}");
        }
        let mut names: Vec<&str> = config.trusted_keys.iter().map(|key| key.name()).collect();
        let mut expected: Vec<&str> = settings["trustedKeys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|key| key.as_str().unwrap().split(':').next().unwrap())
            .collect();
        names.sort_unstable();
        expected.sort_unstable();
        assert_eq!(names, expected, "{name}");
        assert_eq!(
            u64::from(config.tries),
            settings["tries"].as_u64().unwrap(),
            "{name}"
        );
        let reboot = match setting("reboot") {
            "immediate" => RebootPolicy::Immediate,
            "never" => RebootPolicy::Never,
            "window" => RebootPolicy::Window(setting("rebootWindow").parse().unwrap()),
            other => panic!("{name}: reboot {other}"),
        };
        assert_eq!(config.reboot, reboot, "{name}");
        assert_eq!(
            config.check_interval,
            parse_duration(setting("checkInterval")).unwrap(),
            "{name}"
        );
        assert_eq!(
            config.state_dir,
            Path::new(config::DEFAULT_STATE_DIR),
            "{name}"
        );
        let report = config
            .report
            .as_ref()
            .map(|r| (r.bucket.as_str(), r.credentials.as_path()));
        let expected = settings["report"].as_bool().unwrap().then(|| {
            (
                settings["reportBucket"]
                    .as_str()
                    .unwrap_or(setting("bucket")),
                Path::new(setting("reportCredentialsFile")),
            )
        });
        assert_eq!(report, expected, "{name}");
    }
    assert!(
        cases.iter().any(|case| case["settings"]["report"] == true),
        "no case with reports on"
    );
    assert!(
        cases
            .iter()
            .any(|case| case["settings"]["bucket"].is_null()),
        "no air-gapped case"
    );
}
