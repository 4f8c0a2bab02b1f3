//! `mesh`: find, join and offer LLM capacity on public meshes.
//!
//! The binary (`src/main.rs`) only parses the command line and dispatches to these modules:
//! - [`mesh`]: the mesh over iroh — identity, tickets, admission, membership, HTTP tunnel.
//! - [`engine`]: llama.cpp in-process — model, continuous-batching scheduler, sampling.
//! - [`proxy`]: the OpenAI-compatible HTTP API (127.0.0.1:9337).
//! - [`api`]: the management API (127.0.0.1:3131).
//! - [`catalog`]: the model catalog, memory fit and Hugging Face downloads.
//! - [`serve`]: wires the pieces together for `mesh serve`.
//! - [`status`]: `mesh status` and `mesh peers`, clients of the management API.
//! - [`discovery`]: mesh offers on Nostr — publish, browse, score; [`auto`]: `mesh --auto`.
//! - [`config`]: where files live (`~/.mesh`).

pub mod api;
pub mod auto;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod engine;
pub mod mesh;
pub mod proxy;
pub mod serve;
pub mod status;
