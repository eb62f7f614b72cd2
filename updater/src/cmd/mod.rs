//! One module per subcommand; each has `Args` and `run`.

pub mod check;
pub mod device;
pub mod fetch;
pub mod fleet;
pub mod grow;
pub mod install;
pub mod keygen;
pub mod mark_good;
pub mod pack;
pub mod publish;
pub mod remote_args;
pub mod rollback;
pub mod status;
pub mod update;
