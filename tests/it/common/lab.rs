//! A closed "internet" in network namespaces, for the NAT tests (tests/it/netns.rs) and
//! `just bench-net`: a bridge on 198.51.100.0/24, a relay host (198.51.100.10 and .11, each
//! running `iroh-relay` with a self-signed certificate and QUIC address discovery), and sites:
//! a node on the bridge itself (public), or behind a home router doing NAT with nftables on
//! 198.18.N.0/24 (full cone, Linux's port-restricted masquerade, symmetric).
//!
//! Every name is prefixed per lab, so labs of tests running at once do not meet; nothing is
//! created in the caller's namespace, and `Drop` kills the lab's processes and deletes its
//! namespaces (which takes their links with them). [`Lab::new`] says why when namespaces cannot
//! be made here (not root, no `ip` / `nft` / `iroh-relay`): the caller skips with that reason.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The relay host's two addresses (two relays: QUIC address discovery from two destinations
/// tells a symmetric NAT).
pub const RELAY_IPS: [&str; 2] = ["198.51.100.10", "198.51.100.11"];

/// How a site reaches the lab's internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// On the bridge itself, with a public address.
    Public,
    /// Endpoint-independent mapping and filtering: masquerade plus a DNAT of every inbound UDP
    /// port to the LAN host.
    FullCone,
    /// Linux's default masquerade: endpoint-independent mapping, address-and-port filtering.
    PortRestricted,
    /// A new public port per destination: `masquerade random,fully-random`.
    Symmetric,
}

impl Nat {
    pub fn label(self) -> &'static str {
        match self {
            Nat::Public => "public",
            Nat::FullCone => "full-cone",
            Nat::PortRestricted => "port-restricted",
            Nat::Symmetric => "symmetric",
        }
    }
}

/// A place a node runs: its namespace, its own address, the address others see.
#[derive(Debug, Clone)]
pub struct Site {
    pub ns: String,
    pub nat: Nat,
    pub ip: String,
    pub public_ip: String,
}

pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    /// Other services of the lab (a router's UPnP gateway), killed with the lab.
    daemons: Vec<Child>,
    pub dir: tempfile::TempDir,
    sites: u8,
}

static LABS: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// The bridge and the relay host, without relays running yet ([`Self::start_relays`]).
    /// `Err`: why namespaces cannot be used here.
    pub fn new() -> Result<Self, String> {
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root".into());
        }
        for tool in ["ip", "nft", "openssl"] {
            if !tool_runs(tool, "-V") && !tool_runs(tool, "version") {
                return Err(format!(
                    "`{tool}` is not installed (scripts/setup.sh installs it)"
                ));
            }
        }
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let mut lab = Self {
            prefix: format!("mt{}x{n}", std::process::id()),
            namespaces: Vec::new(),
            children: Vec::new(),
            daemons: Vec::new(),
            dir: tempfile::Builder::new()
                .prefix("mesh-lab-")
                .tempdir()
                .map_err(|e| e.to_string())?,
            sites: 0,
        };
        let inet = lab
            .add_ns("inet")
            .map_err(|e| format!("cannot create a namespace: {e}"))?;
        run(&["ip", "-n", &inet, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &inet, "link", "set", "br0", "up"])?;
        let relay = lab.add_ns("relay")?;
        lab.wire(&relay, "eth0", "hrelay")?;
        for ip in RELAY_IPS {
            run(&[
                "ip",
                "-n",
                &relay,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ])?;
        }
        Ok(lab)
    }

    pub fn ns_name(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn add_ns(&mut self, name: &str) -> Result<String, String> {
        let ns = self.ns_name(name);
        run(&["ip", "netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A link from namespace `ns` (named `ifname` there) to the bridge (named `port` there).
    fn wire(&self, ns: &str, ifname: &str, port: &str) -> Result<(), String> {
        let inet = self.ns_name("inet");
        run(&[
            "ip", "-n", &inet, "link", "add", port, "type", "veth", "peer", "name", ifname,
            "netns", ns,
        ])?;
        run(&[
            "ip", "-n", &inet, "link", "set", port, "master", "br0", "up",
        ])?;
        run(&["ip", "-n", ns, "link", "set", ifname, "up"])
    }

    /// A site of kind `nat`: a node namespace, and for NATs its router.
    pub fn add_site(&mut self, nat: Nat) -> Result<Site, String> {
        self.sites += 1;
        let n = self.sites;
        let public_ip = format!("198.51.100.{}", 20 + n);
        let node = self.add_ns(&format!("s{n}"))?;
        if nat == Nat::Public {
            self.wire(&node, "eth0", &format!("h{n}"))?;
            run(&[
                "ip",
                "-n",
                &node,
                "addr",
                "add",
                &format!("{public_ip}/24"),
                "dev",
                "eth0",
            ])?;
            return Ok(Site {
                ns: node,
                nat,
                ip: public_ip.clone(),
                public_ip,
            });
        }
        let router = self.add_ns(&format!("r{n}"))?;
        self.wire(&router, "wan", &format!("h{n}"))?;
        run(&[
            "ip",
            "-n",
            &router,
            "addr",
            "add",
            &format!("{public_ip}/24"),
            "dev",
            "wan",
        ])?;
        run(&[
            "ip", "-n", &router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0",
            "netns", &node,
        ])?;
        let (gw, ip) = (format!("198.18.{n}.1"), format!("198.18.{n}.2"));
        run(&[
            "ip",
            "-n",
            &router,
            "addr",
            "add",
            &format!("{gw}/24"),
            "dev",
            "lan",
        ])?;
        run(&["ip", "-n", &router, "link", "set", "lan", "up"])?;
        run(&[
            "ip",
            "-n",
            &node,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ])?;
        run(&["ip", "-n", &node, "link", "set", "eth0", "up"])?;
        run(&["ip", "-n", &node, "route", "add", "default", "via", &gw])?;
        run(&[
            "ip",
            "netns",
            "exec",
            &router,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])?;
        let masquerade = match nat {
            Nat::Symmetric => "masquerade random,fully-random",
            _ => "masquerade",
        };
        let full_cone = match nat {
            Nat::FullCone => {
                format!("iifname \"wan\" udp dport 1024-65535 dnat to {ip}")
            }
            _ => String::new(),
        };
        let rules = format!(
            "table ip nat {{\n\
               chain prerouting {{\n type nat hook prerouting priority -100;\n {full_cone}\n }}\n\
               chain postrouting {{\n type nat hook postrouting priority 100;\n oifname \"wan\" {masquerade}\n }}\n\
             }}\n\
             table ip filter {{\n\
               chain forward {{\n type filter hook forward priority 0; policy drop;\n\
                 iifname \"lan\" oifname \"wan\" accept\n\
                 ct state established,related accept\n\
                 ct status dnat accept\n\
               }}\n\
             }}\n"
        );
        let file = self.dir.path().join(format!("nft-{n}.conf"));
        std::fs::write(&file, rules).map_err(|e| e.to_string())?;
        run(&[
            "ip",
            "netns",
            "exec",
            &router,
            "nft",
            "-f",
            &file.to_string_lossy(),
        ])?;
        Ok(Site {
            ns: node,
            nat,
            ip,
            public_ip,
        })
    }

    /// Starts the UPnP gateway of `site`'s home router (tests/it/upnp_igd.py: SSDP and SOAP on
    /// the LAN, ports mapped with real nftables rules); returns the log it writes, one
    /// `mapped …` line per mapping. `Err` for a public site (it has no router).
    pub fn start_upnp(&mut self, site: &Site) -> Result<PathBuf, String> {
        let n = site
            .ip
            .strip_prefix("198.18.")
            .and_then(|rest| rest.split('.').next())
            .filter(|_| site.nat != Nat::Public)
            .ok_or_else(|| format!("{} has no router", site.ns))?;
        let router = self.ns_name(&format!("r{n}"));
        let log = self.dir.path().join(format!("upnp-{n}.log"));
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/upnp_igd.py");
        let child = Command::new("ip")
            .args(["netns", "exec", &router, "python3", script])
            .args([
                "--lan-ip",
                &format!("198.18.{n}.1"),
                "--wan-ip",
                &site.public_ip,
            ])
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("cannot start the UPnP gateway: {e}"))?;
        self.daemons.push(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("listening") {
                return Ok(log);
            }
            if Instant::now() > deadline {
                return Err(format!("the UPnP gateway did not start: {text}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A host on the lab's LAN segment with no way out (for `--lan`): a node namespace on the
    /// bridge with a 198.18.0.N/24 address, no default route (no internet; the relay host's
    /// 198.51.100/24 is unreachable from it) and a route for multicast, so that mDNS between two
    /// such sites works. `nat` is `Public` (no router in between).
    pub fn add_lan_site(&mut self) -> Result<Site, String> {
        self.sites += 1;
        let n = self.sites;
        let ip = format!("198.18.0.{}", 10 + n);
        let node = self.add_ns(&format!("s{n}"))?;
        self.wire(&node, "eth0", &format!("h{n}"))?;
        run(&[
            "ip",
            "-n",
            &node,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ])?;
        run(&["ip", "-n", &node, "link", "set", "eth0", "multicast", "on"])?;
        run(&[
            "ip",
            "-n",
            &node,
            "route",
            "add",
            "224.0.0.0/4",
            "dev",
            "eth0",
        ])?;
        Ok(Site {
            ns: node,
            nat: Nat::Public,
            ip: ip.clone(),
            public_ip: ip,
        })
    }

    /// A namespace that reaches nothing at all (for "no internet").
    pub fn add_isolated(&mut self) -> Result<String, String> {
        self.sites += 1;
        self.add_ns(&format!("s{}", self.sites))
    }

    /// A self-signed certificate for the relay host's addresses; returns the PEM path.
    pub fn relay_cert(&self) -> Result<PathBuf, String> {
        let (cert, key) = (
            self.dir.path().join("relay.pem"),
            self.dir.path().join("relay.key"),
        );
        if !cert.exists() {
            let san: Vec<String> = RELAY_IPS.iter().map(|ip| format!("IP:{ip}")).collect();
            run(&[
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=mesh lab relay",
                "-addext",
                &format!("subjectAltName={}", san.join(",")),
                // A leaf, not a CA: rustls refuses a CA certificate as a server's.
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-addext",
                "extendedKeyUsage=serverAuth",
                "-keyout",
                &key.to_string_lossy(),
                "-out",
                &cert.to_string_lossy(),
            ])?;
        }
        Ok(cert)
    }

    /// Starts `iroh-relay` on each relay address (HTTPS on 443, QUIC address discovery on 7842)
    /// and waits until each accepts connections. Returns the relay URLs.
    pub fn start_relays(&mut self) -> Result<Vec<String>, String> {
        if !tool_runs("iroh-relay", "--version") {
            return Err("`iroh-relay` is not installed (scripts/setup.sh installs it)".into());
        }
        let cert = self.relay_cert()?;
        let key = cert.with_extension("key");
        let relay_ns = self.ns_name("relay");
        let mut urls = Vec::new();
        for (i, ip) in RELAY_IPS.iter().enumerate() {
            let config = self.dir.path().join(format!("relay-{i}.toml"));
            let toml = format!(
                "enable_relay = true\nhttp_bind_addr = \"{ip}:80\"\n\
                 enable_quic_addr_discovery = true\nenable_metrics = false\n\
                 [tls]\nhttps_bind_addr = \"{ip}:443\"\nquic_bind_addr = \"{ip}:7842\"\n\
                 cert_mode = \"Manual\"\nmanual_cert_path = \"{}\"\nmanual_key_path = \"{}\"\n",
                cert.display(),
                key.display()
            );
            std::fs::write(&config, toml).map_err(|e| e.to_string())?;
            let log = std::fs::File::create(self.dir.path().join(format!("relay-{i}.log")))
                .map_err(|e| e.to_string())?;
            let child = Command::new("ip")
                .args(["netns", "exec", &relay_ns, "iroh-relay", "-c"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start iroh-relay: {e}"))?;
            self.children.push(child);
            urls.push(format!("https://{ip}"));
        }
        for ip in RELAY_IPS {
            let addr: std::net::SocketAddr = format!("{ip}:443").parse().unwrap();
            let up = in_ns(&relay_ns, move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline {
                    if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                        .is_ok()
                    {
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                false
            });
            if !up {
                let log = std::fs::read_to_string(self.dir.path().join("relay-0.log"))
                    .unwrap_or_default();
                return Err(format!("iroh-relay on {ip} did not come up: {log}"));
            }
        }
        Ok(urls)
    }

    /// Stops the relays (kills every `iroh-relay` this lab started).
    pub fn stop_relays(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }

    /// The `mesh` binary (`$MESH_BIN`, for `just bench-net`'s release build, else the test
    /// build) run in `ns` with its home in the lab's folder `home`, relays from `relays` and
    /// the lab's certificate trusted (set through the environment, as a user's defaults would
    /// be), none of the caller's mesh variables.
    pub fn mesh(&self, ns: &str, home: &str, relays: &[String]) -> Command {
        let home = self.dir.path().join(home);
        let bin = std::env::var("MESH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_mesh").into());
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, &bin]);
        cmd.env("MESH_HOME", &home).env("HF_HOME", home.join("hf"));
        cmd.env_remove("MESH_OFFLINE");
        for var in super::process::CALLER_VARS {
            cmd.env_remove(var);
        }
        cmd.env("MESH_DEFAULT_IROH_RELAYS", relays.join(","));
        if let Ok(cert) = self.relay_cert() {
            cmd.env("MESH_IROH_RELAY_CA", cert);
        }
        cmd
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_relays();
        for c in &mut self.daemons {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.iter().rev() {
            kill_in(ns);
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Runs `f` on a thread inside namespace `ns`: sockets it opens live there.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = Path::new("/run/netns").join(ns);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns file");
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {}", path.display());
        f()
    })
    .join()
    .expect("thread in namespace")
}

/// [`in_ns`] for async work: a current-thread runtime on that thread.
pub fn block_in_ns<T, F>(ns: &str, f: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    mesh::util::tls::install_crypto_provider();
    in_ns(ns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
}

/// Kills every process left in the lab's namespaces (the tests' nodes), so they can go.
pub fn kill_in(ns: &str) {
    let _ = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|out| {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        });
}

fn tool_runs(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
