//! Leaves: small helpers every other layer may use. Nothing here imports anything else from
//! the crate (the layer check in `tests/layers.rs` enforces it), prints, or knows about clap.
//!
//! - [`time`]: Unix time, the one way it is computed.
//! - [`backoff`]: exponential backoff and the retry schedule built on it.
//! - [`signals`]: Ctrl-C / SIGTERM, listened for from the start.
//! - [`tls`]: the process's rustls crypto provider.
//! - [`http`]: the one way an HTTP client is built (timeouts always set).
//! - [`sysinfo`]: total RAM, host name.
//! - [`home`]: where `mesh` keeps its files (`~/.mesh`).
//! - [`model_id`]: a model's id in the API from its file name.
//! - [`logs`]: the ring of recent log lines (`mesh logs`) and the tracing layer feeding it.

pub mod backoff;
pub mod home;
pub mod http;
pub mod logs;
pub mod model_id;
pub mod signals;
pub mod sysinfo;
pub mod time;
pub mod tls;
