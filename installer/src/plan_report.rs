//! `abnix-install --json`: the plan as JSON on stdout (docs/cli.md), what
//! the text plan says, for a program that drives the installer.

use std::path::PathBuf;

use abnix_installer::install::Plan;
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Serialize)]
pub struct PlanReport {
    /// The version installed into slot A.
    version: u64,
    id: Uuid,
    label: String,
    bundle: PathBuf,
    /// The disk or disk-image file written, as the text plan names it.
    target: PathBuf,
    target_description: String,
    /// How `--auto` chose it (null with `--disk` or `--file`).
    selection: Option<String>,
    /// What the target holds.
    contents: String,
    /// Whether it holds something the installation erases.
    erases: bool,
    /// Whether the whole image is verified before the first write.
    image_checked_first: bool,
    bootloader: &'static str,
    arch: String,
    disk_size: u64,
    sector_size: u32,
    partitions: Vec<Partition>,
}

#[derive(Debug, Serialize)]
struct Partition {
    number: u32,
    name: &'static str,
    start: u64,
    size: u64,
}

impl PlanReport {
    pub fn of(plan: &Plan) -> PlanReport {
        let meta = plan.bundle.signed.meta();
        PlanReport {
            version: meta.version,
            id: meta.id,
            label: meta.label.clone(),
            bundle: plan.bundle.dir.clone(),
            target: plan.target.path.clone(),
            target_description: plan.target.describe(),
            selection: plan.selection.as_ref().map(ToString::to_string),
            contents: plan.contents.to_string(),
            erases: !plan.contents.is_blank(),
            image_checked_first: plan.checks_image_first(),
            bootloader: plan.boot.describe(),
            arch: plan.boot.arch().to_string(),
            disk_size: plan.layout.disk_size,
            sector_size: plan.layout.sector_size,
            partitions: plan
                .layout
                .partitions()
                .into_iter()
                .map(|p| Partition {
                    number: p.number,
                    name: p.name,
                    start: p.start,
                    size: p.size,
                })
                .collect(),
        }
    }
}
