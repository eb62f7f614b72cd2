//! The abnix demo (`./scripts/demo`): one machine's life in QEMU, narrated.
//!
//! 1. install: an installer environment boots with an empty disk, and
//!    `abnix-install` provisions it and powers off; the disk boots version 1
//!    from slot A;
//! 2. update: version 2 is published to a local S3 server; the machine
//!    finds it, writes slot B, reboots into it on trial and marks it good;
//! 3. fallback: version 3 never becomes healthy and version 4's kernel
//!    panics; each time the bootloader falls back to version 2 by itself
//!    and the machine never tries that version again; version 5 installs;
//! 4. rollout: version 6 is published staged over a day and the machine
//!    waits for its turn; the operator halts the rollout, then reverts to
//!    version 5 (published again as version 7), which the machine runs
//!    already; `abnix-update fleet` shows the machine's reports, as text and
//!    as an HTML page (`fleet.html` in the demo's directory).
//!
//! Ends with a table of the chapters. `--boot-path NAME` picks the
//! firmware and bootloader (grub-seabios, the default; grub-ovmf;
//! systemd-boot-ovmf).

use std::process::ExitCode;

use abnix_systest::fleet::Policy;
use abnix_systest::story::{BootPath, Story};
use abnix_systest::{rollout, scenarios};
use anyhow::{bail, Result};

type Chapter = fn(&mut Story) -> Result<String>;

const CHAPTERS: [(&str, Chapter); 4] = [
    ("install", scenarios::install),
    ("update", scenarios::update),
    ("fallback", scenarios::fallback),
    ("rollout", rollout::halt_and_revert),
];

fn boot_path(args: &[String]) -> Result<BootPath> {
    match args {
        [] => Ok(BootPath::GrubSeaBios),
        [flag, name] if flag == "--boot-path" => BootPath::ALL
            .into_iter()
            .find(|path| path.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = BootPath::ALL.iter().map(|path| path.name()).collect();
                anyhow::anyhow!("unknown boot path {name:?}; one of {}", names.join(", "))
            }),
        _ => bail!("usage: abnix-demo [--boot-path NAME]"),
    }
}

fn demo(path: BootPath) -> Result<Story> {
    let tries = 2;
    println!(
        "abnix demo: one machine ({}, {tries} boot attempts for a trial version), \
         a local S3 server as its bucket, versions built from Debian's kernel and busybox \
         with the real abnix-install and abnix-update inside.\n",
        path.name()
    );
    let mut story = Story::new(path, "demo", Policy { tries })?;
    // Its machine id, for the staged rollout and its reports.
    story.report_as(uuid::Uuid::new_v4())?;
    for (name, chapter) in CHAPTERS {
        if let Err(err) = story.chapter(name, chapter) {
            eprintln!("abnix-demo: {err:#}");
            break;
        }
    }
    Ok(story)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let story = match boot_path(&args).and_then(demo) {
        Ok(story) => story,
        Err(err) => {
            eprintln!("abnix-demo: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", story.summary());
    if story.passed(CHAPTERS.len()) {
        println!(
            "\nall chapters passed; console transcripts: {}",
            story.dir().display()
        );
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "\nabnix-demo: a chapter failed; console transcripts: {}",
            story.dir().display()
        );
        ExitCode::FAILURE
    }
}
