//! QEMU machines driven over the serial console.
//!
//! A [`Machine`] is a virtual computer: firmware (with its own UEFI variable
//! store), disks, network. Each [`Machine::start`] runs one QEMU process on it
//! ([`Vm`]); starting again after the process ended is the same computer
//! switched on again, with the same disks and UEFI variables.
//!
//! The guest's serial console is QEMU's stdout. A thread reads it line by
//! line into a channel and into a transcript file per start, each line
//! stamped with the seconds since QEMU started. Tests wait for lines with
//! [`Vm::expect`]; every error names the transcript and quotes its last
//! lines.
//!
//! QEMU runs under TCG (no KVM here): expect a fixture to boot in seconds,
//! a firmware + bootloader path in tens of seconds.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use abnix_formats::layout::Arch;
use anyhow::{Context, Result};
use uuid::Uuid;

use crate::platform::Platform;
use crate::tool;

/// Console lines quoted in errors.
const TAIL_LINES: usize = 40;

/// The machine's firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// BIOS (QEMU's default firmware on x86_64): boots the first disk's MBR.
    SeaBios,
    /// UEFI, edk2's (OVMF; AAVMF on aarch64): boots `EFI/BOOT/BOOTX64.EFI`
    /// (`BOOTAA64.EFI`) from the ESP, or the boot entries in its variable
    /// store.
    Ovmf,
}

/// How a start boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// Through the firmware from the disks, as a real machine does.
    Firmware,
    /// QEMU loads this kernel and initrd itself and passes `cmdline`: no
    /// bootloader involved (the firmware still runs first).
    Kernel {
        kernel: PathBuf,
        initrd: PathBuf,
        cmdline: String,
    },
}

/// What a reboot of the guest does to the QEMU process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnReboot {
    /// The machine resets and boots again in the same process, as hardware
    /// does: a test sees several consecutive boots on one console.
    Restart,
    /// QEMU exits (`-no-reboot`): a test sees one boot, then can start the
    /// machine again, e.g. with a different [`Boot`].
    Exit,
}

/// The hardware of a machine.
#[derive(Debug, Clone)]
pub struct MachineSpec {
    /// The harness's own ([`Arch::native`]) unless told otherwise.
    pub arch: Arch,
    pub firmware: Firmware,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Raw disk-image files, attached as virtio disks in order (`/dev/vda`,
    /// `/dev/vdb`, …).
    pub disks: Vec<PathBuf>,
    /// A virtio NIC on QEMU's user network: the guest is 10.0.2.15/24 and
    /// reaches the host's 127.0.0.1 at 10.0.2.2.
    pub network: bool,
    /// The SMBIOS system UUID (QEMU's `-uuid`), the guest's
    /// `/sys/class/dmi/id/product_uuid`: a fleet host's machine id.
    pub uuid: Option<Uuid>,
}

impl MachineSpec {
    /// 512 MiB, one CPU (TCG runs one vCPU per host thread; the CI machine
    /// has two cores for everything), network on, no disks yet.
    pub fn new(firmware: Firmware) -> Self {
        MachineSpec {
            arch: Arch::native(),
            firmware,
            memory_mib: 512,
            cpus: 1,
            disks: Vec::new(),
            network: true,
            uuid: None,
        }
    }

    pub fn disk(mut self, path: impl Into<PathBuf>) -> Self {
        self.disks.push(path.into());
        self
    }

    pub fn uuid(mut self, uuid: Option<Uuid>) -> Self {
        self.uuid = uuid;
        self
    }

    /// A machine of another architecture (aarch64 has UEFI only).
    pub fn arch(mut self, arch: Arch) -> Self {
        self.arch = arch;
        self
    }
}

/// A virtual computer that can be switched on (see the module docs).
#[derive(Debug)]
pub struct Machine {
    name: String,
    spec: MachineSpec,
    dir: PathBuf,
    /// The machine's own copy of the UEFI variable store (OVMF only).
    uefi_vars: Option<PathBuf>,
    starts: u32,
}

impl Machine {
    /// A machine called `name` keeping its files (UEFI variables, console
    /// transcripts) in `dir`.
    pub fn new(name: &str, spec: MachineSpec, dir: &Path) -> Result<Machine> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let platform = Platform::of(spec.arch);
        let uefi_vars = match spec.firmware {
            Firmware::SeaBios => {
                anyhow::ensure!(
                    spec.arch.has_bios(),
                    "{} machines have no BIOS: boot them through UEFI",
                    spec.arch
                );
                None
            }
            Firmware::Ovmf => {
                let vars = dir.join(format!("{name}-uefi-vars.fd"));
                for firmware in [platform.uefi_code, platform.uefi_vars] {
                    anyhow::ensure!(
                        Path::new(firmware).is_file(),
                        "{firmware} is missing (apt-get install {})",
                        platform.uefi_package
                    );
                }
                std::fs::copy(platform.uefi_vars, &vars).with_context(|| {
                    format!("copying {} to {}", platform.uefi_vars, vars.display())
                })?;
                Some(vars)
            }
        };
        Ok(Machine {
            name: name.to_owned(),
            spec,
            dir: dir.to_owned(),
            uefi_vars,
            starts: 0,
        })
    }

    /// Switches the machine on: starts QEMU. The console transcript goes to
    /// `<dir>/<name>-<n>.log` for the n-th start.
    pub fn start(&mut self, boot: &Boot, on_reboot: OnReboot) -> Result<Vm> {
        self.starts += 1;
        let log = self.dir.join(format!("{}-{}.log", self.name, self.starts));
        let mut command = self.command(boot, on_reboot);
        Vm::spawn(&mut command, log)
    }

    fn command(&self, boot: &Boot, on_reboot: OnReboot) -> Command {
        let platform = Platform::of(self.spec.arch);
        let mut qemu = Command::new(platform.qemu);
        qemu.args(["-nodefaults", "-no-user-config"]).args([
            "-machine",
            platform.machine,
            "-accel",
            "tcg",
        ]);
        if let Some(cpu) = platform.cpu {
            qemu.args(["-cpu", cpu]);
        }
        qemu.args(["-m", &self.spec.memory_mib.to_string()])
            .args(["-smp", &self.spec.cpus.to_string()])
            .args(["-display", "none", "-serial", "stdio"])
            // Entropy for the guest's getrandom() (see initramfs::MODULES).
            .args(["-device", "virtio-rng-pci"]);
        if let Some(vars) = &self.uefi_vars {
            qemu.arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    platform.uefi_code
                ))
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars.display()
                ));
        }
        for disk in &self.spec.disks {
            // cache=unsafe only skips the host's fsync: QEMU still hands
            // every guest write to the host kernel when the guest issues it,
            // so a killed QEMU (a power cut) keeps exactly the writes the
            // guest's disk had received, and nothing the guest had not sent.
            qemu.arg("-drive").arg(format!(
                "file={},format=raw,if=virtio,cache=unsafe",
                disk.display()
            ));
        }
        if self.spec.network {
            // No network boot: without a bootable disk the firmware would
            // otherwise spend minutes on PXE and HTTP boot before anything
            // else. `romfile=` drops the NIC's iPXE option ROM (SeaBIOS and
            // OVMF); OVMF's own network stack is switched off through fw_cfg
            // (edk2's OvmfPkg/RUNTIME_CONFIG.md; Debian's 2022.11 OVMF has
            // these two, not VirtioNetSupport). The guest's Linux is not
            // affected.
            qemu.args(["-netdev", "user,id=net0"])
                .args(["-device", "virtio-net-pci,netdev=net0,romfile="]);
            if self.uefi_vars.is_some() {
                qemu.args(["-fw_cfg", "name=opt/org.tianocore/IPv4Support,string=no"])
                    .args(["-fw_cfg", "name=opt/org.tianocore/IPv6Support,string=no"]);
            }
        }
        if let Some(uuid) = self.spec.uuid {
            qemu.args(["-uuid", &uuid.to_string()]);
        }
        if on_reboot == OnReboot::Exit {
            qemu.arg("-no-reboot");
        }
        if let Boot::Kernel {
            kernel,
            initrd,
            cmdline,
        } = boot
        {
            qemu.arg("-kernel")
                .arg(kernel)
                .arg("-initrd")
                .arg(initrd)
                .arg("-append")
                .arg(cmdline);
        }
        qemu
    }
}

/// One line of the guest's console, with the time since QEMU started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleLine {
    pub text: String,
    pub at: Duration,
}

impl ConsoleLine {
    /// The value of a `key=value` word of the line: for
    /// `ABNIX-FIXTURE version=2 slot=b`, `field("slot")` is `Some("b")`.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.text
            .split_whitespace()
            .filter_map(|word| word.split_once('='))
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value)
    }
}

impl fmt::Display for ConsoleLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:8.3}] {}", self.at.as_secs_f64(), self.text)
    }
}

/// Why waiting on a machine failed. Every message ends with the last
/// console lines and the path of the full transcript.
#[derive(thiserror::Error)]
pub enum VmError {
    #[error("no console line containing {needle:?} within {waited:?}{tail}")]
    Timeout {
        needle: String,
        waited: Duration,
        tail: Tail,
    },
    #[error("QEMU exited ({status}) before a console line containing {needle:?}{tail}")]
    Exited {
        needle: String,
        status: ExitStatus,
        tail: Tail,
    },
    #[error("the machine was still running after {waited:?}{tail}")]
    StillRunning { waited: Duration, tail: Tail },
    #[error("controlling QEMU: {source}{tail}")]
    Io { source: io::Error, tail: Tail },
}

/// Shows the message, so a test's `unwrap()` prints the console tail
/// readably rather than as a struct dump.
impl fmt::Debug for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The end of a console transcript, for error messages.
#[derive(Debug, Clone)]
pub struct Tail {
    pub lines: Vec<String>,
    pub log: PathBuf,
}

impl fmt::Display for Tail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "\n--- last console lines (full transcript: {}) ---",
            self.log.display()
        )?;
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        write!(f, "--- end of console ---")
    }
}

/// A running QEMU process: the machine switched on. Dropping it kills QEMU.
pub struct Vm {
    child: Child,
    lines: Receiver<ConsoleLine>,
    recent: VecDeque<String>,
    log: PathBuf,
    started: Instant,
    exit_status: Option<ExitStatus>,
}

impl Vm {
    fn spawn(command: &mut Command, log: PathBuf) -> Result<Vm> {
        let transcript =
            File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let transcript = Arc::new(Mutex::new(transcript));
        let invocation = format!("{command:?}");
        record(&transcript, &format!("$ {invocation}"));
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| tool::spawn_error(&program, err))?;
        let started = Instant::now();
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().context("QEMU's stdout")?;
        let stderr = child.stderr.take().context("QEMU's stderr")?;
        forward_lines(stdout, "", started, sender.clone(), transcript.clone());
        forward_lines(stderr, "qemu: ", started, sender, transcript);
        tracing::debug!(log = %log.display(), "started {invocation}");
        Ok(Vm {
            child,
            lines,
            recent: VecDeque::new(),
            log,
            started,
            exit_status: None,
        })
    }

    /// Waits for a console line containing `needle` and returns it. Lines
    /// before it are consumed (they stay in the transcript).
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> Result<ConsoleLine, VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            let line = self.next_line_until(deadline, needle, timeout)?;
            if line.text.contains(needle) {
                return Ok(line);
            }
        }
    }

    /// The next console line, whatever it says, within `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Result<ConsoleLine, VmError> {
        self.next_line_until(Instant::now() + timeout, "any line", timeout)
    }

    /// The next line before `deadline`; errors name what was awaited.
    fn next_line_until(
        &mut self,
        deadline: Instant,
        awaited: &str,
        timeout: Duration,
    ) -> Result<ConsoleLine, VmError> {
        match self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(line) => {
                self.remember(&line);
                Ok(line)
            }
            Err(RecvTimeoutError::Timeout) => Err(VmError::Timeout {
                needle: awaited.to_owned(),
                waited: timeout,
                tail: self.tail(),
            }),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.reap()?;
                Err(VmError::Exited {
                    needle: awaited.to_owned(),
                    status,
                    tail: self.tail(),
                })
            }
        }
    }

    /// Waits for QEMU to exit (the guest powered off, or rebooted under
    /// [`OnReboot::Exit`]) and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, VmError> {
        if let Some(status) = self.exit_status {
            // Already reaped (a power cut): its last lines may still be on
            // their way through the console thread, but it has ended.
            return Ok(status);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => self.remember(&line),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(VmError::StillRunning {
                        waited: timeout,
                        tail: self.tail(),
                    })
                }
                Err(RecvTimeoutError::Disconnected) => return self.reap(),
            }
        }
    }

    /// Pulls the plug: kills QEMU with SIGKILL at once, so the guest gets
    /// no chance to flush anything. Returns once the process is gone.
    pub fn power_cut(&mut self) -> Result<(), VmError> {
        if self.exit_status.is_none() {
            if let Err(source) = self.child.kill() {
                return Err(VmError::Io {
                    source,
                    tail: self.tail(),
                });
            }
        }
        self.reap().map(drop)
    }

    /// Cuts the power the moment a console line contains `needle`; returns
    /// that line.
    pub fn power_cut_when(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> Result<ConsoleLine, VmError> {
        let line = self.expect(needle, timeout)?;
        self.power_cut()?;
        Ok(line)
    }

    /// Time since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The console transcript of this start.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    fn reap(&mut self) -> Result<ExitStatus, VmError> {
        if let Some(status) = self.exit_status {
            return Ok(status);
        }
        match self.child.wait() {
            Ok(status) => {
                self.exit_status = Some(status);
                Ok(status)
            }
            Err(source) => Err(VmError::Io {
                source,
                tail: self.tail(),
            }),
        }
    }

    fn remember(&mut self, line: &ConsoleLine) {
        if self.recent.len() == TAIL_LINES {
            self.recent.pop_front();
        }
        self.recent.push_back(line.to_string());
    }

    fn tail(&mut self) -> Tail {
        // Lines already read by the console thread but not yet waited for
        // belong in the picture too.
        while let Ok(line) = self.lines.try_recv() {
            self.remember(&line);
        }
        Tail {
            lines: self.recent.iter().cloned().collect(),
            log: self.log.clone(),
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.exit_status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads `stream` line by line on a thread: each line goes, stamped, to the
/// transcript and to `sender`. Console bytes that are not UTF-8 (firmware
/// menus) are replaced, carriage returns dropped.
fn forward_lines(
    stream: impl Read + Send + 'static,
    prefix: &'static str,
    started: Instant,
    sender: Sender<ConsoleLine>,
    transcript: Arc<Mutex<File>>,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut bytes = Vec::new();
        loop {
            bytes.clear();
            match reader.read_until(b'\n', &mut bytes) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&bytes);
            let line = ConsoleLine {
                text: format!(
                    "{prefix}{}",
                    text.trim_end_matches(['\n', '\r']).replace('\r', "")
                ),
                at: started.elapsed(),
            };
            record(&transcript, &line.to_string());
            // The receiver is gone once the Vm is dropped; keep draining so
            // QEMU never blocks on a full pipe.
            let _ = sender.send(line);
        }
    });
}

fn record(transcript: &Mutex<File>, line: &str) {
    let mut file = transcript
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // A transcript that cannot be written must not stop the machine.
    let _ = writeln!(file, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_a_marker_line() {
        let line = ConsoleLine {
            text: "ABNIX-FIXTURE version=12 id=x slot=b behaviour=healthy".to_owned(),
            at: Duration::ZERO,
        };
        assert_eq!(line.field("version"), Some("12"));
        assert_eq!(line.field("slot"), Some("b"));
        assert_eq!(line.field("missing"), None);
    }

    #[test]
    fn uefi_machines_get_their_own_variable_store_and_their_emulator() {
        for arch in Arch::ALL {
            let platform = Platform::of(arch);
            let dir = tempfile::tempdir().unwrap();
            let spec = MachineSpec::new(Firmware::Ovmf).arch(arch);
            let machine = Machine::new("m", spec, dir.path()).unwrap();
            let vars = machine.uefi_vars.clone().unwrap();
            assert_eq!(
                std::fs::read(&vars).unwrap(),
                std::fs::read(platform.uefi_vars).unwrap()
            );
            let command = machine.command(&Boot::Firmware, OnReboot::Restart);
            assert_eq!(command.get_program(), platform.qemu);
            let args: Vec<String> = command
                .get_args()
                .map(|arg| arg.to_string_lossy().into_owned())
                .collect();
            assert!(args
                .iter()
                .any(|arg| arg.ends_with(&format!("file={}", vars.display()))));
            assert!(args
                .windows(2)
                .any(|pair| pair == ["-machine", platform.machine]));
            assert!(!args.contains(&"-no-reboot".to_owned()));
        }
    }

    #[test]
    fn aarch64_machines_have_no_bios() {
        let dir = tempfile::tempdir().unwrap();
        let spec = MachineSpec::new(Firmware::SeaBios).arch(Arch::Aarch64);
        let err = Machine::new("m", spec, dir.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "aarch64 machines have no BIOS: boot them through UEFI"
        );
    }
}
