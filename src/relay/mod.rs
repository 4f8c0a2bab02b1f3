//! `mesh relay`: a small Nostr relay for private networks and tests, so offers can be published
//! and discovered without any public relay.
//!
//! The relay itself is nostr-relay-builder's `LocalRelay` (NIP-01 messages, NIP-09 deletions,
//! NIP-40 expiration, replaceable and addressable events, per-connection rate limit). This module
//! owns what sits around it: the listener (a real port 0, so tests get a free port without a
//! race), the WebSocket upgrade over hyper with a connection limit and a NIP-11 document for
//! plain HTTP, storage (memory, or LMDB with `--db`), and the write policy: [`Admission`]
//! refuses events larger than a limit or of kinds mesh does not use, [`check_deletion`] refuses
//! deletions naming someone else's events (the store would drop them with a bare "unknown"
//! error). Files: `relay/http.rs` (listener, header timeout), `relay/bridge.rs` (each session
//! read under a message limit and an idle timeout), `relay/policy.rs` (write policy),
//! `relay/ip_rate.rs` (per-IP rate, keyed on /64 for IPv6). It imports `discovery::offer` (the
//! kind it accepts) and `util`, nothing above. docs/PROTOCOL.md ("mesh relay") lists what it
//! accepts; docs/SECURITY.md ("Hostile Nostr relays") its limits.

mod bridge;
mod http;
mod ip_rate;
mod policy;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use nostr::RelayUrl;
use nostr_relay_builder::builder::RateLimit;
use nostr_relay_builder::prelude::{MemoryDatabase, MemoryDatabaseOptions, NostrDatabase};
use nostr_relay_builder::{LocalRelay, RelayBuilder};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use self::policy::{check_deletion, Admission};

/// Kind of a NIP-09 deletion request.
pub const DELETION_KIND: u16 = 5;
/// Default port of `mesh relay`.
pub const DEFAULT_PORT: u16 = 7447;
/// Default largest event accepted (its JSON, in bytes).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 * 1024;
/// Default events a connection may publish per minute.
pub const DEFAULT_RATE: u32 = 60;
/// Default events one IP address may publish per minute, over all its connections.
pub const DEFAULT_RATE_PER_IP: u32 = 600;
/// Default open subscriptions (REQs) per connection.
pub const DEFAULT_MAX_REQS: usize = 64;
/// Events kept by the in-memory store (the oldest go first).
pub const MAX_MEMORY_EVENTS: usize = 75_000;
/// Default simultaneous connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Largest `limit` a filter may ask for (larger ones are clamped to it; none means this too).
pub const MAX_FILTER_LIMIT: usize = 500;
/// Default time for an HTTP request head (the upgrade request, or the NIP-11 one).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a session may go without a message either way (a WebSocket ping counts), and
/// a client may take to accept one message from the relay.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Largest WebSocket message the relay reads: twice the event limit, so an event up to twice
/// too large still gets an `OK` saying why; a larger message closes the session (code 1009)
/// from its frame header, before its payload is buffered.
pub fn max_message_bytes(max_event_bytes: usize) -> usize {
    max_event_bytes.saturating_mul(2)
}

/// How to run a relay.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    pub host: IpAddr,
    /// 0 picks a free port.
    pub port: u16,
    /// Keep events in an LMDB database in this directory instead of in memory.
    pub db: Option<PathBuf>,
    pub max_event_bytes: usize,
    /// Accept every kind, not only offers and deletions.
    pub any_kind: bool,
    /// Events per minute per connection, and per client IP address.
    pub rate: u32,
    pub rate_per_ip: u32,
    pub max_reqs: usize,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_PORT,
            db: None,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            any_kind: false,
            rate: DEFAULT_RATE,
            rate_per_ip: DEFAULT_RATE_PER_IP,
            max_reqs: DEFAULT_MAX_REQS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// A relay serving in this process; stops on [`RunningRelay::shutdown`] or when dropped.
pub struct RunningRelay {
    url: RelayUrl,
    addr: SocketAddr,
    relay: LocalRelay,
    cancel: CancellationToken,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl RunningRelay {
    /// `ws://HOST:PORT`, with the port actually bound.
    pub fn url(&self) -> RelayUrl {
        self.url.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes every session, and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        self.relay.shutdown();
        let _ = (&mut self.accept_loop).await;
    }
}

impl Drop for RunningRelay {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.relay.shutdown();
    }
}

/// Binds the listener and starts serving.
pub async fn start(opts: RelayOptions) -> anyhow::Result<RunningRelay> {
    let database: Arc<dyn NostrDatabase> = match &opts.db {
        Some(dir) => Arc::new(open_database(dir)?),
        None => Arc::new(MemoryDatabase::with_opts(MemoryDatabaseOptions {
            events: true,
            max_events: Some(MAX_MEMORY_EVENTS),
        })),
    };
    let builder = RelayBuilder::default()
        .database(database.clone())
        .max_filter_limit(MAX_FILTER_LIMIT)
        .default_filter_limit(MAX_FILTER_LIMIT)
        .rate_limit(RateLimit {
            max_reqs: opts.max_reqs,
            notes_per_minute: opts.rate,
        })
        .write_policy(policy::Policy {
            rules: Admission::new(&opts),
            database,
            per_ip: std::sync::Mutex::new(ip_rate::IpRate::new(opts.rate_per_ip)),
        });
    let relay = LocalRelay::new(builder);
    let listener = TcpListener::bind((opts.host, opts.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", opts.host, opts.port))?;
    let addr = listener.local_addr()?;
    let url = RelayUrl::parse(&format!("ws://{addr}")).context("relay URL")?;
    let cancel = CancellationToken::new();
    let server = http::Server {
        relay: relay.clone(),
        slots: Arc::new(Semaphore::new(opts.max_connections)),
        info: Bytes::from(http::relay_info(&opts).to_string()),
        limits: bridge::Limits {
            max_message_bytes: max_message_bytes(opts.max_event_bytes),
            idle: opts.idle_timeout,
        },
        header_timeout: opts.header_timeout,
    };
    let accept_loop = tokio::spawn(http::accept_loop(listener, server, cancel.clone()));
    Ok(RunningRelay {
        url,
        addr,
        relay,
        cancel,
        accept_loop,
    })
}

fn open_database(dir: &std::path::Path) -> anyhow::Result<nostr_lmdb::NostrLMDB> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    nostr_lmdb::NostrLMDB::open(dir)
        .with_context(|| format!("cannot open the event database in {}", dir.display()))
}
