//! A file tree assembled in memory, then written out as an initramfs (cpio)
//! or as a directory that `mkfs.ext4 -d` turns into a root filesystem.
//!
//! Both fixtures need the same things (busybox with its applet links, host
//! binaries with the shared libraries they load, generated files), so they
//! are described once here.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use abnix_formats::layout::Arch;
use anyhow::{bail, Context, Result};

use crate::cpio::CpioWriter;
use crate::platform::Platform;
use crate::{debian, paths, tool};

/// Where busybox-static installs the shell and every tool the fixtures use.
pub const BUSYBOX: &str = "/bin/busybox";

/// busybox-static for machines of `arch`: the host's own, or for another
/// architecture Debian's package for it, fetched into the cache.
fn busybox_for(arch: Arch) -> Result<PathBuf> {
    if arch == Arch::native() {
        return Ok(PathBuf::from(BUSYBOX));
    }
    let package = format!("busybox-static:{}", Platform::of(arch).debian_arch);
    let root = paths::cache_dir().join("busybox").join(&package);
    debian::unpacked(&package, &root, |_| Ok(()))?;
    Ok(root.join(BUSYBOX.trim_start_matches('/')))
}

/// The banner a busybox binary carries: `BusyBox v1.35.0 (Debian
/// 1:1.35.0-4+deb12u1+b1)`, the same for one Debian build on every
/// architecture.
fn busybox_banner(binary: &[u8]) -> Option<&[u8]> {
    let start = binary.windows(9).position(|w| w == b"BusyBox v")?;
    let len = binary[start..].iter().position(|&b| b == b')')? + 1;
    Some(&binary[start..start + len])
}

#[derive(Debug, Clone)]
enum Entry {
    Directory,
    File {
        contents: Contents,
        permissions: u32,
    },
    Symlink(String),
    CharDevice {
        major: u32,
        minor: u32,
    },
}

#[derive(Debug, Clone)]
enum Contents {
    Bytes(Vec<u8>),
    Host(PathBuf),
}

/// Paths are relative to the tree's root and use `/` (`bin/busybox`). A path
/// added twice keeps the last entry; parents are created as needed.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    // Sorted, so a parent always comes before its children (it is a prefix)
    // and the output is the same whatever the order of construction.
    entries: BTreeMap<String, Entry>,
}

impl Tree {
    pub fn new() -> Self {
        Tree::default()
    }

    pub fn directory(&mut self, path: &str) {
        let path = normalize(path);
        self.insert(path, Entry::Directory);
    }

    /// A file with the given bytes.
    pub fn file(&mut self, path: &str, permissions: u32, contents: impl Into<Vec<u8>>) {
        self.insert(
            normalize(path),
            Entry::File {
                contents: Contents::Bytes(contents.into()),
                permissions,
            },
        );
    }

    /// A copy of a file on the host, keeping its permission bits.
    pub fn host_file(&mut self, path: &str, host: &Path) -> Result<()> {
        let metadata =
            std::fs::metadata(host).with_context(|| format!("reading {}", host.display()))?;
        if !metadata.is_file() {
            bail!("{} is not a regular file", host.display());
        }
        self.insert(
            normalize(path),
            Entry::File {
                contents: Contents::Host(host.to_owned()),
                permissions: metadata.permissions().mode() & 0o7777,
            },
        );
        Ok(())
    }

    /// Copies of every file under `host` at `path`, recursively (symlinks are
    /// followed: the tree holds what they point to).
    pub fn host_directory(&mut self, path: &str, host: &Path) -> Result<()> {
        self.directory(path);
        let mut children: Vec<_> = std::fs::read_dir(host)
            .with_context(|| format!("reading {}", host.display()))?
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading {}", host.display()))?;
        children.sort_by_key(|child| child.file_name());
        for child in children {
            let name = child.file_name();
            let Some(name) = name.to_str() else {
                bail!("{} has a name that is not UTF-8", child.path().display());
            };
            let dest = format!("{}/{name}", normalize(path));
            if child.path().is_dir() {
                self.host_directory(&dest, &child.path())?;
            } else {
                self.host_file(&dest, &child.path())?;
            }
        }
        Ok(())
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(normalize(path), Entry::Symlink(target.to_owned()));
    }

    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) {
        self.insert(normalize(path), Entry::CharDevice { major, minor });
    }

    /// `/bin/busybox` for machines of `arch` and a link in `/bin` for each
    /// applet, so `sh`, `mount`, `wget`… work without `busybox --install` at
    /// boot. The applets are the host's busybox's (`--list`; a binary of
    /// another architecture cannot run here), so another architecture's
    /// must come from the same Debian build, which its banner says.
    pub fn busybox(&mut self, arch: Arch) -> Result<()> {
        let busybox = busybox_for(arch)?;
        if busybox != Path::new(BUSYBOX) {
            let read = |path: &Path| {
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))
            };
            let (theirs, ours) = (read(&busybox)?, read(Path::new(BUSYBOX))?);
            let (theirs, ours) = (busybox_banner(&theirs), busybox_banner(&ours));
            anyhow::ensure!(
                theirs.is_some() && theirs == ours,
                "{} ({}) is not the build of the host's busybox-static ({}): install the same version",
                busybox.display(),
                String::from_utf8_lossy(theirs.unwrap_or(b"no banner")),
                String::from_utf8_lossy(ours.unwrap_or(b"no banner"))
            );
        }
        // Static: no libraries to bring.
        self.host_file("bin/busybox", &busybox)?;
        let output = tool::run(Command::new(BUSYBOX).arg("--list"))?;
        for applet in String::from_utf8_lossy(&output.stdout).lines() {
            if !applet.is_empty() && applet != "busybox" {
                self.symlink(&format!("bin/{applet}"), "busybox");
            }
        }
        Ok(())
    }

    /// A host executable copied into `directory`, with every shared library
    /// it loads (as `ldd` resolves them on the host) at the same path, the
    /// dynamic loader included.
    pub fn binary(&mut self, host: &Path, directory: &str) -> Result<()> {
        let Some(name) = host.file_name().and_then(|name| name.to_str()) else {
            bail!("{} has no usable file name", host.display());
        };
        self.host_file(&format!("{}/{name}", normalize(directory)), host)?;
        for library in shared_libraries(host)? {
            let path = library
                .to_str()
                .with_context(|| format!("library path {} is not UTF-8", library.display()))?;
            self.host_file(path, &library)?;
        }
        Ok(())
    }

    /// Writes the tree as a newc archive (an initramfs). Every entry is owned
    /// by root with mtime 0.
    pub fn write_cpio(&self, out: impl Write) -> Result<()> {
        let mut cpio = CpioWriter::new(out);
        for (path, entry) in &self.entries {
            match entry {
                Entry::Directory => cpio.directory(path, 0o755)?,
                Entry::File {
                    contents: Contents::Bytes(bytes),
                    permissions,
                } => cpio.file(path, *permissions, bytes.len() as u64, &bytes[..])?,
                Entry::File {
                    contents: Contents::Host(host),
                    permissions,
                } => {
                    let file =
                        File::open(host).with_context(|| format!("opening {}", host.display()))?;
                    let len = file.metadata()?.len();
                    cpio.file(path, *permissions, len, file)
                        .with_context(|| format!("archiving {}", host.display()))?;
                }
                Entry::Symlink(target) => cpio.symlink(path, target)?,
                Entry::CharDevice { major, minor } => {
                    cpio.char_device(path, 0o600, *major, *minor)?
                }
            }
        }
        cpio.finish()?;
        Ok(())
    }

    /// Creates the tree under `root` (which must not exist yet), for tools
    /// that read a directory. Device nodes are not supported there: creating
    /// them needs root.
    pub fn write_directory(&self, root: &Path) -> Result<()> {
        std::fs::create_dir(root).with_context(|| format!("creating {}", root.display()))?;
        self.write_over(root)
    }

    /// Adds the tree to the existing directory `root`: its directories are
    /// created where missing, its files and links replace what is there.
    pub fn write_over(&self, root: &Path) -> Result<()> {
        for (path, entry) in &self.entries {
            let dest = root.join(path);
            if !matches!(entry, Entry::Directory) {
                // Replaced, never written through: `dest` may be a link or
                // a file shared with another tree.
                match std::fs::remove_file(&dest) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => {
                        return Err(err).with_context(|| format!("replacing {}", dest.display()))
                    }
                }
            }
            match entry {
                Entry::Directory if dest.is_dir() => {}
                Entry::Directory => std::fs::create_dir(&dest)
                    .with_context(|| format!("creating {}", dest.display()))?,
                Entry::File {
                    contents,
                    permissions,
                } => {
                    match contents {
                        Contents::Bytes(bytes) => std::fs::write(&dest, bytes)?,
                        Contents::Host(host) => {
                            std::fs::copy(host, &dest).with_context(|| {
                                format!("copying {} to {}", host.display(), dest.display())
                            })?;
                        }
                    }
                    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(*permissions))?;
                }
                Entry::Symlink(target) => std::os::unix::fs::symlink(target, &dest)?,
                Entry::CharDevice { .. } => {
                    bail!("{path}: device nodes cannot be created in a directory without root")
                }
            }
        }
        Ok(())
    }

    /// Every path in the tree, parents first.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    fn insert(&mut self, path: String, entry: Entry) {
        let mut parent = path.as_str();
        while let Some((ancestor, _)) = parent.rsplit_once('/') {
            self.entries
                .entry(ancestor.to_owned())
                .or_insert(Entry::Directory);
            parent = ancestor;
        }
        self.entries.insert(path, entry);
    }
}

fn normalize(path: &str) -> String {
    path.trim_matches('/').to_owned()
}

/// The shared libraries `binary` loads, including the dynamic loader, as
/// absolute host paths; empty for a static executable.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = tool::run_unchecked(Command::new("ldd").arg(binary))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // glibc's ldd exits 1 and says so on stdout or stderr for static files.
    if stdout.contains("not a dynamic executable") || stderr.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    if !output.status.success() {
        bail!("ldd {} failed: {}", binary.display(), stderr.trim());
    }
    parse_ldd(&stdout).with_context(|| format!("libraries of {}", binary.display()))
}

/// Parses `ldd` output: `name => /path (0x…)` lines, the loader as
/// `/path (0x…)`, and the kernel's vDSO, which is no file.
fn parse_ldd(output: &str) -> Result<Vec<PathBuf>> {
    let mut libraries = Vec::new();
    for line in output
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
    {
        if line == "statically linked" {
            continue;
        }
        let resolved = match line.split_once(" => ") {
            Some((name, rest)) => {
                if rest.starts_with("not found") {
                    bail!("shared library {name} not found on the host");
                }
                rest
            }
            None => line,
        };
        let path = resolved
            .split_whitespace()
            .next()
            .context("empty ldd line")?;
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        } else if !path.starts_with("linux-vdso") && !path.starts_with("linux-gate") {
            bail!("unexpected ldd line {line:?}");
        }
    }
    Ok(libraries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldd_output_with_loader_and_vdso() {
        let output = "\tlinux-vdso.so.1 (0x00007ffc4d3f6000)\n\
             \tlibzstd.so.1 => /lib/x86_64-linux-gnu/libzstd.so.1 (0x00007f1c0d2d6000)\n\
             \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f1c0d0f5000)\n\
             \t/lib64/ld-linux-x86-64.so.2 (0x00007f1c0d3c2000)\n";
        assert_eq!(
            parse_ldd(output).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libzstd.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn rejects_a_missing_library_by_name() {
        let output = "\tlibfoo.so.3 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n";
        let err = parse_ldd(output).unwrap_err().to_string();
        assert!(err.contains("libfoo.so.3 not found"), "{err}");
    }

    #[test]
    fn rejects_unexpected_lines() {
        let err = parse_ldd("\tgarbage here\n").unwrap_err().to_string();
        assert!(err.contains("unexpected ldd line"), "{err}");
    }

    #[test]
    fn a_dynamic_host_binary_brings_its_libraries_and_loader() {
        let libraries = shared_libraries(Path::new("/usr/bin/zstd")).unwrap();
        assert!(
            libraries.iter().any(|l| l.ends_with("libc.so.6")),
            "{libraries:?}"
        );
        assert!(
            libraries
                .iter()
                .any(|l| l.ends_with("ld-linux-x86-64.so.2")),
            "{libraries:?}"
        );
        assert!(
            shared_libraries(Path::new(BUSYBOX)).unwrap().is_empty(),
            "busybox-static"
        );
    }

    #[test]
    fn parents_are_created_and_come_first() {
        let mut tree = Tree::new();
        tree.file("/usr/lib/x/libc.so", 0o644, "x");
        tree.symlink("bin/sh", "busybox");
        let paths: Vec<&str> = tree.paths().collect();
        assert_eq!(
            paths,
            [
                "bin",
                "bin/sh",
                "usr",
                "usr/lib",
                "usr/lib/x",
                "usr/lib/x/libc.so"
            ]
        );
    }

    /// Over an existing tree: directories stay, files and links are
    /// replaced, and a link is never written through.
    #[test]
    fn written_over_a_directory_replaces_files_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/kept"), "kept").unwrap();
        std::fs::write(root.join("etc/config"), "old").unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "outside").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc/linked")).unwrap();

        let mut tree = Tree::new();
        tree.file("etc/config", 0o600, "new");
        tree.file("etc/linked", 0o644, "replaced");
        tree.symlink("etc/new/link", "/dev/null");
        tree.write_over(&root).unwrap();

        let read = |path: &str| std::fs::read_to_string(root.join(path)).unwrap();
        assert_eq!(read("etc/kept"), "kept");
        assert_eq!(read("etc/config"), "new");
        assert_eq!(read("etc/linked"), "replaced");
        assert!(!root.join("etc/linked").is_symlink());
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "outside");
        assert_eq!(
            std::fs::read_link(root.join("etc/new/link")).unwrap(),
            Path::new("/dev/null")
        );
    }

    #[test]
    fn directory_output_matches_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let mut tree = Tree::new();
        tree.file("etc/config", 0o600, "secret");
        tree.symlink("bin/sh", "busybox");
        tree.write_directory(&dir.path().join("root")).unwrap();
        let config = dir.path().join("root/etc/config");
        assert_eq!(std::fs::read(&config).unwrap(), b"secret");
        assert_eq!(
            std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("root/bin/sh")).unwrap(),
            Path::new("busybox")
        );
    }
}
