//! `mesh`: find, join and offer LLM capacity on public meshes.
//!
//! Layers that only point down (`tests/layers.rs` proves it; docs/DESIGN.md explains it):
//!
//! ```text
//! cmd        the only layer that sees clap or prints; `main.rs` parses and dispatches here
//! node       composition root: local generator slot + mesh + discovery + both HTTP servers
//! http       OpenAI API, management API (typed documents), errors, local-or-mesh routing
//! relay      the Nostr relay server (`mesh relay`)
//! discovery  mesh offers on Nostr: offer, score, demand (pure) | reader, probe, browse, publish
//! mesh       the mesh over iroh: proto (pure) | state (pure) | net (endpoint, gossip, tunnel)
//! engine     llama.cpp in-process: model, scheduler, sampling, text
//! catalog    model catalog, memory fit, Hugging Face downloads
//! util       leaves: time, backoff, signals, TLS, HTTP client, system info, paths
//! ```
//!
//! A module may import only the modules listed below it.

pub mod catalog;
pub mod cmd;
pub mod discovery;
pub mod engine;
pub mod http;
pub mod mesh;
pub mod node;
pub mod relay;
pub mod util;
