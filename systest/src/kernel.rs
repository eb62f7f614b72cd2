//! The fixture kernel: Debian's cloud kernel for the machines'
//! architecture, fetched once with `apt-get download` and unpacked into the
//! cache ([`debian`]).
//!
//! The cloud flavour is small and boots quickly under TCG; ext4 is built in,
//! but the virtio drivers are modules, which the fixture initramfs loads (see
//! [`Kernel::modules_in_load_order`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use abnix_formats::layout::Arch;
use anyhow::{bail, Context, Result};

use crate::platform::Platform;
use crate::{debian, paths, tool};

/// One unpacked kernel package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The machines it runs on.
    pub arch: Arch,
    /// `uname -r`, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// The bootable image (`vmlinuz`: a bzImage, or arm64's uncompressed
    /// Image, both with an EFI stub).
    pub image: PathBuf,
    /// `lib/modules/<release>`, with the `modules.dep` that `depmod` made.
    pub modules_dir: PathBuf,
}

/// A loadable module: its name and its `.ko` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub file: PathBuf,
}

impl Kernel {
    /// Debian's newest cloud kernel for `arch`, downloaded into the cache
    /// the first time and reused afterwards (a newer kernel in the apt lists
    /// is fetched once it appears).
    pub fn debian_cloud(arch: Arch) -> Result<Kernel> {
        // Tests of one process share the download; the atomic rename below
        // covers separate processes.
        static FETCH: Mutex<()> = Mutex::new(());
        let _guard = FETCH
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());

        let debian_arch = Platform::of(arch).debian_arch;
        // The meta-package whose dependency is always the newest cloud kernel
        // of the suite (`linux-image-6.1.0-NN-cloud-amd64` on bookworm).
        let meta = format!("linux-image-cloud-{debian_arch}");
        let output = tool::run(
            Command::new("apt-cache").args(["depends", &format!("{meta}:{debian_arch}")]),
        )?;
        let package = newest_cloud_kernel(&String::from_utf8_lossy(&output.stdout), &meta)
            .context("finding Debian's cloud kernel (has apt-get update run?)")?;
        let release = package
            .strip_prefix("linux-image-")
            .context("kernel package name")?
            .to_owned();
        let root = paths::cache_dir().join("kernel").join(&package);
        // The package ships no modules.dep: its postinst makes one.
        debian::unpacked(&format!("{package}:{debian_arch}"), &root, |unpacked| {
            tool::run(Command::new("depmod").arg("-b").arg(unpacked).arg(&release)).map(drop)
        })?;
        let kernel = Kernel {
            arch,
            image: root.join("boot").join(format!("vmlinuz-{release}")),
            modules_dir: root.join("lib/modules").join(&release),
            release,
        };
        if !kernel.image.is_file() || !kernel.modules_dir.join("modules.dep").is_file() {
            bail!(
                "{} is incomplete; delete it to fetch the kernel again",
                root.display()
            );
        }
        Ok(kernel)
    }

    /// The modules to `insmod`, in order, so that `names` and everything
    /// they depend on are loaded. Names built into the kernel need nothing.
    pub fn modules_in_load_order(&self, names: &[&str]) -> Result<Vec<Module>> {
        let read = |file: &str| {
            let path = self.modules_dir.join(file);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        let dependencies = parse_modules_dep(&read("modules.dep")?)?;
        let builtin = parse_builtin(&read("modules.builtin")?)?;
        Ok(load_order(&dependencies, &builtin, names)?
            .into_iter()
            .map(|name| Module {
                file: self.modules_dir.join(&dependencies[&name].file),
                name,
            })
            .collect())
    }
}

/// The kernel package the meta-package `meta` (`linux-image-cloud-ARCH`)
/// depends on, from `apt-cache depends` output (`  Depends:
/// linux-image-6.1.0-56-cloud-amd64`, with `:arm64` after it for a foreign
/// architecture).
fn newest_cloud_kernel(apt_cache_depends: &str, meta: &str) -> Result<String> {
    let flavour = meta
        .strip_prefix("linux-image")
        .context("not a kernel meta-package")?;
    apt_cache_depends
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends: "))
        .map(|package| package.trim_matches(['<', '>']))
        .map(|package| {
            package
                .split_once(':')
                .map_or(package, |(name, _arch)| name)
        })
        .find(|package| package.starts_with("linux-image-") && package.ends_with(flavour))
        .map(str::to_owned)
        .with_context(|| format!("{meta} depends on no cloud kernel package"))
}

/// One line of modules.dep: the module's file and the names of every module
/// it needs (depmod lists the full transitive set).
#[derive(Debug, Clone, PartialEq, Eq)]
struct DepLine {
    file: PathBuf,
    needs: Vec<String>,
}

/// A module's name from its file: `kernel/fs/nls/nls_iso8859-1.ko` →
/// `nls_iso8859_1` (the kernel treats `-` and `_` alike in names).
fn module_name(file: &str) -> Result<String> {
    let base = file.rsplit('/').next().unwrap_or(file);
    let Some(stem) = base.strip_suffix(".ko") else {
        bail!("{file}: not an uncompressed .ko (compressed modules are not supported)");
    };
    if stem.is_empty() {
        bail!("{file}: empty module name");
    }
    Ok(stem.replace('-', "_"))
}

/// Parses modules.dep (`path.ko: dep.ko dep.ko`, one module per line).
fn parse_modules_dep(text: &str) -> Result<BTreeMap<String, DepLine>> {
    let mut modules = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((file, needs)) = line.split_once(':') else {
            bail!("modules.dep line {}: no ':' in {line:?}", number + 1);
        };
        let needs = needs
            .split_whitespace()
            .map(module_name)
            .collect::<Result<_>>()
            .with_context(|| format!("modules.dep line {}", number + 1))?;
        let name = module_name(file).with_context(|| format!("modules.dep line {}", number + 1))?;
        let line = DepLine {
            file: PathBuf::from(file),
            needs,
        };
        if modules.insert(name.clone(), line).is_some() {
            bail!(
                "modules.dep line {}: module {name} listed twice",
                number + 1
            );
        }
    }
    Ok(modules)
}

/// Parses modules.builtin (one `path.ko` per line) into module names.
fn parse_builtin(text: &str) -> Result<BTreeSet<String>> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| module_name(line.trim()))
        .collect()
}

/// Orders the modules so each comes after everything it needs.
fn load_order(
    modules: &BTreeMap<String, DepLine>,
    builtin: &BTreeSet<String>,
    wanted: &[&str],
) -> Result<Vec<String>> {
    fn visit(
        name: &str,
        modules: &BTreeMap<String, DepLine>,
        visiting: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result<()> {
        if order.iter().any(|done| done == name) {
            return Ok(());
        }
        if visiting.iter().any(|open| open == name) {
            bail!(
                "module dependency cycle: {} -> {name}",
                visiting.join(" -> ")
            );
        }
        let line = modules.get(name).with_context(|| {
            format!("module {name} needed by {visiting:?} is not in modules.dep")
        })?;
        visiting.push(name.to_owned());
        for need in &line.needs {
            visit(need, modules, visiting, order)?;
        }
        visiting.pop();
        order.push(name.to_owned());
        Ok(())
    }

    let mut order = Vec::new();
    for name in wanted {
        let name = name.replace('-', "_");
        if modules.contains_key(&name) {
            visit(&name, modules, &mut Vec::new(), &mut order)?;
        } else if !builtin.contains(&name) {
            bail!("module {name} is neither a module of this kernel nor built in");
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Excerpt of 6.1.0-56-cloud-amd64's modules.dep, as depmod writes it.
    const MODULES_DEP: &str = "\
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/nls/nls_iso8859-1.ko:
";

    #[test]
    fn dependencies_load_first_and_once() {
        let modules = parse_modules_dep(MODULES_DEP).unwrap();
        let builtin = parse_builtin("kernel/fs/ext4/ext4.ko\n").unwrap();
        let order = load_order(
            &modules,
            &builtin,
            &["virtio_pci", "virtio_blk", "ext4", "nls_iso8859-1"],
        )
        .unwrap();
        assert_eq!(
            order,
            [
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
                "virtio_ring",
                "virtio",
                "virtio_pci",
                "virtio_blk",
                "nls_iso8859_1"
            ]
        );
        assert_eq!(
            modules["nls_iso8859_1"].file,
            std::path::Path::new("kernel/fs/nls/nls_iso8859-1.ko")
        );
    }

    #[test]
    fn unknown_module_is_named() {
        let modules = parse_modules_dep(MODULES_DEP).unwrap();
        let err = load_order(&modules, &BTreeSet::new(), &["virtio_fancy"]).unwrap_err();
        assert!(err.to_string().contains("module virtio_fancy"), "{err}");
    }

    #[test]
    fn missing_dependency_and_cycles_are_rejected() {
        let modules = parse_modules_dep("a.ko: b.ko\n").unwrap();
        let err = load_order(&modules, &BTreeSet::new(), &["a"]).unwrap_err();
        assert!(err.to_string().contains("module b needed by"), "{err}");

        let modules = parse_modules_dep("a.ko: b.ko\nb.ko: a.ko\n").unwrap();
        let err = load_order(&modules, &BTreeSet::new(), &["a"]).unwrap_err();
        assert!(err.to_string().contains("cycle: a -> b -> a"), "{err}");
    }

    #[test]
    fn malformed_modules_dep_is_rejected_with_its_line() {
        let err = parse_modules_dep("a.ko:\nno colon here\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = parse_modules_dep("kernel/x.ko.xz:\n").unwrap_err();
        assert!(format!("{err:#}").contains("compressed modules"), "{err:#}");
        let err = parse_modules_dep("a.ko:\na.ko:\n").unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
    }

    #[test]
    fn finds_the_cloud_kernel_of_the_meta_package() {
        let output = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            newest_cloud_kernel(output, "linux-image-cloud-amd64").unwrap(),
            "linux-image-6.1.0-56-cloud-amd64"
        );
        let foreign =
            "linux-image-cloud-arm64:arm64\n  Depends: linux-image-6.1.0-57-cloud-arm64:arm64\n";
        assert_eq!(
            newest_cloud_kernel(foreign, "linux-image-cloud-arm64").unwrap(),
            "linux-image-6.1.0-57-cloud-arm64"
        );
        assert!(newest_cloud_kernel(output, "linux-image-cloud-arm64").is_err());
        let err = newest_cloud_kernel("linux-image-cloud-amd64\n", "linux-image-cloud-amd64")
            .unwrap_err();
        assert!(err.to_string().contains("no cloud kernel"), "{err}");
    }
}
