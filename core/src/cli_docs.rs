//! Man pages and shell completions, generated from a binary's clap
//! definition by the binary itself (`abnix-update generate-docs DIR`,
//! `abnix-install --generate-docs DIR`, both hidden), so what ships always
//! describes the binary it ships with. nix/package.nix installs them.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap_complete::Shell;

/// Section 8: system administration commands, run as root.
const MAN_SECTION: &str = "8";

/// Writes into `dir` (created if needed) the man page of `command`
/// (`NAME.8`), one per visible subcommand (`NAME-SUB.8`, which the main
/// page refers to), and its completions for bash (`NAME.bash`), zsh
/// (`_NAME`) and fish (`NAME.fish`). Returns the files written.
pub fn write(mut command: clap::Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = command.get_name().to_owned();
    // `help SUBCOMMAND` needs no page of its own.
    let mut pages = command.clone().disable_help_subcommand(true);
    pages.build();
    let mut written = vec![man_page(&pages, &name, dir)?];
    for sub in pages.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let page_name = format!("{name}-{}", sub.get_name());
        written.push(man_page(sub, &page_name, dir)?);
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut command, &name, dir)
            .with_context(|| format!("writing the {shell} completions into {}", dir.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// `dir/PAGE.8`: `command`'s page under the name `page`.
fn man_page(command: &clap::Command, page: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let mut roff = Vec::new();
    clap_mangen::Man::new(command.clone().name(page.to_owned()))
        .section(MAN_SECTION)
        .render(&mut roff)
        .with_context(|| format!("rendering the man page {page}({MAN_SECTION})"))?;
    let path = dir.join(format!("{page}.{MAN_SECTION}"));
    fs::write(&path, roff).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
