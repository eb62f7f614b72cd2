//! `abnix-update fetch` (under construction on its owning branch).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("fetch is not built yet")
}
