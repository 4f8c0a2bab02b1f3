//! The HTTP layer: both servers `mesh` runs, and where a request goes.
//! - [`openai`]: the OpenAI-compatible API (default 127.0.0.1:9337).
//! - [`ollama`]: the Ollama-compatible API on the same port, translated into OpenAI's
//!   handlers (so routed the same way).
//! - [`api`]: the management API (default 127.0.0.1:3131) and its typed documents
//!   ([`api::docs`]), which `mesh status / peers / publish` read back.
//! - [`generate`]: the [`generate::Generate`] trait (the engine, or [`fake::Scripted`] in
//!   tests) and the node's [`generate::LocalSlot`].
//! - [`slots`]: the generator's slots, queued fairly between local users and each peer by
//!   [`fair`] (pure round-robin).
//! - [`upstream`]: engines already running beside `mesh` (`--upstream`), polled and proxied.
//! - [`route`]: local, upstream or mesh, and what this node announces that it serves.
//! - [`error`]: the one error shape of both APIs (OpenAI's), and the SSE error chunk.
//! - [`guard`]: what guards both servers against web pages and other machines (`Host`,
//!   JSON-only state changes, same-origin, API key, CORS), applied to each whole router.
//! - [`serve`]: binding a listener and serving a router until cancelled.
//!
//! Imports domain modules (`engine`, `mesh`, `discovery`) and `util`; never `node` or `cmd`.

pub mod api;
pub mod error;
pub mod fair;
pub mod fake;
pub mod generate;
pub mod guard;
pub mod ollama;
pub mod openai;
pub mod route;
pub mod serve;
pub mod slots;
pub mod upstream;
