//! The one way `mesh` builds an HTTP client: rustls (ring), a user agent, and timeouts that are
//! always set, so no request can hang forever on a silent server.

use std::time::Duration;

/// Timeouts and redirect policy of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Redirects followed (0: none, the first response is the answer).
    pub redirects: usize,
    pub connect_timeout: Duration,
    /// Longest silence while reading a response (not the whole transfer: downloads are long).
    pub read_timeout: Duration,
    /// Whole-request limit, for short API calls.
    pub total_timeout: Option<Duration>,
}

impl ClientOptions {
    /// Large transfers: generous read timeout, no total limit.
    pub const fn transfer(redirects: usize) -> Self {
        Self {
            redirects,
            connect_timeout: Duration::from_secs(20),
            read_timeout: Duration::from_secs(60),
            total_timeout: None,
        }
    }

    /// Short calls to an API (a local node's management API): everything bounded.
    pub const fn api(total: Duration) -> Self {
        Self {
            redirects: 0,
            connect_timeout: Duration::from_secs(5),
            read_timeout: total,
            total_timeout: Some(total),
        }
    }
}

/// A reqwest client built with `opts`.
pub fn client(opts: ClientOptions) -> Result<reqwest::Client, reqwest::Error> {
    // reqwest is built with `rustls-no-provider`: pick ring once per process (iroh uses it too).
    super::tls::install_crypto_provider();
    let policy = if opts.redirects == 0 {
        reqwest::redirect::Policy::none()
    } else {
        reqwest::redirect::Policy::limited(opts.redirects)
    };
    let mut builder = reqwest::Client::builder()
        .redirect(policy)
        .connect_timeout(opts.connect_timeout)
        .read_timeout(opts.read_timeout)
        .user_agent(concat!("mesh/", env!("CARGO_PKG_VERSION")));
    if let Some(total) = opts.total_timeout {
        builder = builder.timeout(total);
    }
    builder.build()
}
