//! Every integration test, in one binary: each former `tests/*.rs` file is a module here, so
//! llama.cpp is linked once instead of once per file (nextest still runs each test in its own
//! process and shows it as `it module::test`). Shared helpers live in `common`.

mod common;

mod auto;
mod batching;
mod catalog_cli;
mod catalog_download;
mod claims;
mod cli;
mod console;
mod console_api;
mod discovery;
mod embeddings;
mod errors;
mod hostile_relay;
mod lan;
mod local_surface;
mod mesh_admission;
mod mesh_api;
mod mesh_flood;
mod mesh_forwarding;
mod mesh_hostile_hosts;
mod mesh_kill;
mod mesh_relay;
mod mesh_routing;
mod multi_model;
mod netns;
mod ollama_api;
mod openai_api;
mod openai_structured;
mod p2p;
mod prefix_cache;
mod prefix_routing;
mod relay;
mod serve_catalog;
mod split;
mod split_auto;
mod split_rpc;
mod tcp_share;
mod tools;
mod tunnel_limits;
mod upstream;
