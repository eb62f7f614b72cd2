//! One module per subcommand; each has `Args` and `run`.

pub mod check;
pub mod device;
pub mod fetch;
pub mod fleet;
pub mod grow;
pub mod keygen;
pub mod mark_good;
pub mod pack;
pub mod publish;
pub mod remote_args;
pub mod rollback;
pub mod status;
pub mod update;

/// Logs go to stderr through `tracing`; `RUST_LOG` overrides the default
/// level. Off a terminal (the journal) lines carry neither colour codes
/// nor a timestamp, which journald adds itself.
pub fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = std::io::stderr().is_terminal();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(terminal);
    if terminal {
        logs.init();
    } else {
        logs.without_time().init();
    }
}
