//! The child processes of split serving. llama.cpp's RPC server trusts its client and its RPC
//! client aborts the process when a server vanishes, so neither runs in the node: a worker runs
//! `mesh rpc-worker` (the RPC server on a loopback port), a host runs `mesh rpc-host` (the
//! model over RPC devices, serving the OpenAI API on a loopback port, used as an upstream).
//!
//! Each child is the node's own executable. Its stdin is a pipe from the node: when the node
//! exits, however it exits, the pipe closes and the child ends itself (`cmd::split`); while the
//! node runs, dropping a [`Child`] kills it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Longest a worker's RPC server may take to accept connections.
pub const WORKER_START: Duration = Duration::from_secs(30);
/// Time between two connection attempts while a worker's RPC server starts.
const START_PROBE: Duration = Duration::from_millis(100);

/// A running child process (killed when dropped).
pub struct Child {
    pub process: tokio::process::Child,
    /// Where it listens (`127.0.0.1:PORT`).
    pub addr: SocketAddr,
    /// The child's stdin, held open while it should run (tokio's `wait` would close it).
    _stdin: Option<tokio::process::ChildStdin>,
}

impl Child {
    fn new(mut process: tokio::process::Child, addr: SocketAddr) -> Self {
        let stdin = process.stdin.take();
        Self {
            process,
            addr,
            _stdin: stdin,
        }
    }
}

impl Child {
    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.process.try_wait(), Ok(None))
    }
}

/// A loopback port free now (the child binds it a moment later).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn command(args: &[String]) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the mesh binary: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    Ok(cmd)
}

/// Starts `mesh rpc-worker` on a free loopback port and waits until it accepts connections.
pub async fn spawn_worker(threads: usize) -> Result<Child, String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut process = command(&[
        "rpc-worker".into(),
        "--endpoint".into(),
        addr.to_string(),
        "--threads".into(),
        threads.to_string(),
    ])?
    .spawn()
    .map_err(|e| format!("cannot start the RPC server: {e}"))?;
    let started = tokio::time::Instant::now();
    loop {
        if let Ok(Some(status)) = process.try_wait() {
            return Err(format!("the RPC server exited at start ({status})"));
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(Child::new(process, addr));
        }
        if started.elapsed() > WORKER_START {
            return Err(format!(
                "the RPC server did not listen within {}s",
                WORKER_START.as_secs()
            ));
        }
        tokio::time::sleep(START_PROBE).await;
    }
}

/// What the host's child loads.
#[derive(Debug, Clone)]
pub struct HostArgs {
    pub model: std::path::PathBuf,
    pub name: String,
    /// The workers' RPC servers as this node exposes them (`127.0.0.1:PORT` each).
    pub rpc: Vec<String>,
    /// Layers on the workers.
    pub worker_layers: u32,
    pub ctx: Option<u32>,
    pub parallel: u32,
    pub threads: Option<u32>,
}

/// Starts `mesh rpc-host` serving the OpenAI API on a free loopback port (it answers once the
/// model is loaded: the upstream poller notices).
pub fn spawn_host(a: &HostArgs) -> Result<Child, String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let mut args = vec![
        "rpc-host".into(),
        "--model".into(),
        a.model.to_string_lossy().into_owned(),
        "--model-name".into(),
        a.name.clone(),
        "--port".into(),
        port.to_string(),
        "--gpu-layers".into(),
        a.worker_layers.to_string(),
        "--parallel".into(),
        a.parallel.to_string(),
    ];
    for endpoint in &a.rpc {
        args.push("--rpc".into());
        args.push(endpoint.clone());
    }
    if let Some(ctx) = a.ctx {
        args.extend(["--ctx".into(), ctx.to_string()]);
    }
    if let Some(t) = a.threads {
        args.extend(["--threads".into(), t.to_string()]);
    }
    let process = command(&args)?
        .spawn()
        .map_err(|e| format!("cannot start the split's engine: {e}"))?;
    Ok(Child::new(
        process,
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
    ))
}
