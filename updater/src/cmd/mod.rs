//! One module per subcommand; each has `Args` and `run`.

pub mod device;
pub mod fetch;
pub mod keygen;
pub mod mark_good;
pub mod pack;
pub mod publish;
pub mod status;

/// Logs go to stderr through `tracing`; `RUST_LOG` overrides the default level.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
