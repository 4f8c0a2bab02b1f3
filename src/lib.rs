//! `mesh`: find, join and offer LLM capacity on public meshes.
//!
//! The binary (`src/main.rs`) only parses the command line and dispatches to these modules:
//! - [`engine`]: llama.cpp in-process — model, continuous-batching scheduler, sampling.
//! - [`proxy`]: the OpenAI-compatible HTTP API (127.0.0.1:9337).
//! - [`api`]: the management API (127.0.0.1:3131).
//! - [`catalog`]: the model catalog, memory fit and Hugging Face downloads.
//! - [`serve`]: wires the pieces together for `mesh serve`.

pub mod api;
pub mod catalog;
pub mod cli;
pub mod engine;
pub mod proxy;
pub mod serve;
