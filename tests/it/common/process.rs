//! The one way tests run the `mesh` binary: [`mesh_command`] (a clean environment rooted in a
//! temporary home) and [`MeshProcess`] (stdout and stderr as lines, the startup banner, signals,
//! SIGKILL on drop without ever panicking there).

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

/// How long a process gets to print its banner (a model load on a loaded 2-core machine).
const BANNER_WITHIN: Duration = Duration::from_secs(60);

/// The binary with its homes (mesh, Hugging Face cache) under `home`, offline (no iroh relays:
/// no test touches the internet; a test that wants a relay removes `MESH_OFFLINE` and names
/// its own), and none of the caller's variables that would send it elsewhere (relays, hub,
/// tokens, offline mode).
pub fn mesh_command(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mesh"));
    cmd.env("MESH_HOME", home)
        .env("HF_HOME", home.join("hf"))
        .env("MESH_OFFLINE", "1");
    for var in CALLER_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// `mesh serve` of the test model as most tests run it: free ports, a small context, one
/// thread, two slots, no identity kept, the mesh endpoint on loopback.
pub fn serve_test_model(home: &Path) -> Command {
    let mut cmd = mesh_command(home);
    cmd.args(["serve", "--model"])
        .arg(super::model_path())
        .args(["--port", "0", "--api-port", "0", "--ctx", "256"])
        .args(["--threads", "1", "--parallel", "2", "--ephemeral"])
        .args(["--mesh-bind", "127.0.0.1:0"]);
    cmd
}

/// The caller's variables that would send a test's `mesh` elsewhere (relays, hub, tokens,
/// offline mode, LAN addresses, memory): removed from every command tests run.
pub const CALLER_VARS: [&str; 10] = [
    "MESH_MEMORY_BYTES",
    "MESH_IROH_RELAY_CA",
    "MESH_RELAYS",
    "MESH_DEFAULT_IROH_RELAYS",
    "MESH_ADVERTISE_LAN",
    "HF_HUB_CACHE",
    "HF_TOKEN",
    "HF_HUB_OFFLINE",
    "HF_ENDPOINT",
    "XDG_CACHE_HOME",
];

/// A fresh temporary directory (removed when dropped).
pub fn temp_home() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mesh-test-")
        .tempdir()
        .expect("temp dir")
}

/// A running `mesh` child. `lines` holds its output up to the banner (after [`Self::start`]);
/// later lines are read with [`Self::wait_line`]. SIGKILLed and reaped on drop.
pub struct MeshProcess {
    child: Child,
    pub lines: Vec<String>,
    more: Receiver<String>,
}

impl MeshProcess {
    /// Spawns `cmd` with stdout and stderr read line by line into one channel (stderr is also
    /// echoed, so a failing test shows it).
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mesh starts");
        let (tx, more) = channel();
        forward_lines(child.stdout.take().expect("stdout"), tx.clone(), false);
        forward_lines(child.stderr.take().expect("stderr"), tx, true);
        Self {
            child,
            lines: Vec::new(),
            more,
        }
    }

    /// [`Self::spawn`], then reads its output up to the banner's last line (`Ctrl-C to stop`);
    /// `Err` with the lines seen when the process ends (or stays silent) first.
    pub fn start(cmd: Command) -> Result<Self, Vec<String>> {
        let mut p = Self::spawn(cmd);
        let deadline = Instant::now() + BANNER_WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match p.more.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains("Ctrl-C to stop");
                    p.lines.push(line);
                    if done {
                        return Ok(p);
                    }
                }
                Err(_) => return Err(std::mem::take(&mut p.lines)),
            }
        }
    }

    /// [`Self::start`] off the async runtime; panics when no banner comes.
    pub async fn start_async(cmd: Command) -> Self {
        let shown = format!("{cmd:?}");
        tokio::task::spawn_blocking(move || Self::start(cmd))
            .await
            .expect("start task")
            .unwrap_or_else(|lines| panic!("{shown} ended before its banner: {lines:?}"))
    }

    /// The value of the banner line `  LABEL   value`.
    pub fn value(&self, label: &str) -> String {
        super::banner_value(&self.lines, label)
            .unwrap_or_else(|| panic!("no {label}: {:?}", self.lines))
    }

    /// `http://ADDR` of the OpenAI API (the banner's `OpenAI API` line without `/v1`).
    pub fn base(&self) -> String {
        self.value("OpenAI API").trim_end_matches("/v1").to_owned()
    }

    /// `http://ADDR` of the management API.
    pub fn api(&self) -> String {
        self.value("management")
            .trim_end_matches("/api/status")
            .to_owned()
    }

    /// Waits (off the runtime) for a later output line containing `text`; returns the lines read
    /// up to and including it.
    pub async fn wait_line(&mut self, text: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::task::block_in_place(|| self.more.recv_timeout(left)) {
                Ok(line) => {
                    let found = line.contains(text);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(_) => panic!("no line with {text:?} within {within:?}: {seen:?}"),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({signal})");
    }

    /// Ctrl-C (SIGINT), then the exit status within 20 s.
    pub fn interrupt(&mut self) -> ExitStatus {
        self.stop_with(libc::SIGINT)
    }

    /// Sends `signal`, then returns the exit status within 20 s.
    pub fn stop_with(&mut self, signal: i32) -> ExitStatus {
        self.signal(signal);
        self.wait_exit(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("no exit within 20 s of signal {signal}"))
    }

    /// Ctrl-C, and SIGKILL if it still runs 20 s later; never panics. The exit status, if it
    /// ended on Ctrl-C.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.wait_exit(Duration::from_secs(20));
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        status
    }

    /// SIGKILL (no cleanup at all) and reap.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// The exit status once the process has ended, `None` if it still runs after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for MeshProcess {
    /// SIGKILL and reap; never panics (it may run while a failed test unwinds).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn forward_lines(from: impl std::io::Read + Send + 'static, to: Sender<String>, echo: bool) {
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            if echo {
                eprintln!("{line}");
            }
            let _ = to.send(line);
        }
    });
}

/// How a short-lived `mesh` command ended, and its peak resident memory.
#[derive(Debug)]
pub struct Measured {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The largest `VmHWM` (peak RSS) read from `/proc/<pid>/status` while it ran, in KiB; read
    /// every 5 ms, so the peak of its last few milliseconds may be missed (none expected: it is
    /// exiting then). It includes the binary's own pages (about 25 MiB for a debug build).
    pub peak_rss_kib: u64,
    /// The largest `RssAnon` (private memory: heap, stacks) seen in those reads, in KiB: what
    /// the process allocated, without the binary's pages.
    pub peak_anon_kib: u64,
}

/// Runs `cmd` to its end (panics if it runs longer than `within`), sampling its peak RSS.
pub fn run_measured(mut cmd: Command, within: Duration) -> Measured {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mesh starts");
    let read_all = |mut from: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = from.read_to_string(&mut text);
            text
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read_all(Box::new(child.stderr.take().expect("stderr")));
    let status_file = format!("/proc/{}/status", child.id());
    let deadline = Instant::now() + within;
    let (mut peak_rss_kib, mut peak_anon_kib) = (0, 0);
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(&status_file) {
            peak_rss_kib = peak_rss_kib.max(status_kib(&s, "VmHWM:").unwrap_or(0));
            peak_anon_kib = peak_anon_kib.max(status_kib(&s, "RssAnon:").unwrap_or(0));
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still ran after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Measured {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        peak_rss_kib,
        peak_anon_kib,
    }
}

/// The value of a `Label:   1234 kB` line of `/proc/<pid>/status`.
fn status_kib(status: &str, label: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(label))?;
    line[label.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
