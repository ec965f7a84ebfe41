//! A real wardend process on a per-test SoftHSM token, with three admins (alice, bob, carol),
//! their mTLS certificates and approval keys, and a policy: the signer side every end-to-end
//! test shares, whatever node (CLN's proxy or an LDK node) it serves.
#![allow(dead_code)]

use super::TestToken;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use warden::approval::keys::AdminKey;

/// The end-to-end suites' rules: the default policy's shape (policy/default.toml) scaled so a
/// test reaches every rule in a few payments: a per-payment cap and a daily cap of 2,000,000 sat,
/// and 2-of-3 approval above 1,000,000 sat.
pub const QUORUM_RULES: &str = r#"
[[limit]]
tag = "per-payment-cap"
window = "payment"
max_amount = "2_000_000 sat"

[[limit]]
tag = "daily-cap"
window = "24h"
max_amount = "2_000_000 sat"

[[approval]]
tag = "large-payment-quorum"
above = "1_000_000 sat"
quorum = { need = 2, of = ["alice", "bob", "carol"] }
expiry = "1h"
"#;

/// Policy rules for load runs: limits far above what a run spends and no approval rule, so every
/// payment is decided by the policy (evaluated, counted, audited) and approved.
pub const LOAD_RULES: &str = r#"
[[limit]]
tag = "per-payment-cap"
window = "payment"
max_amount = "1 btc"

[[limit]]
tag = "daily-cap"
window = "24h"
max_amount = "100000 btc"
"#;

/// A loopback port nothing listens on, never the same one twice in this process (until all
/// 12,768 were handed out). Taken from `bind(0)` it raced: the kernel may hand a just-released
/// ephemeral port to the next `bind(0)` or outgoing connection before the daemon binds it
/// (CI: "cannot listen on admin.listen ... Address already in use").
pub fn free_port() -> u16 {
    // Below Linux's ephemeral range (32768 and up): a port handed out here is released until
    // the daemon binds it, and in that gap an outgoing connection (to PostgreSQL, to the
    // proxy) or anyone's bind(0) could be given it; they only ever take ephemeral ports. Each
    // process starts at its own offset and never hands out a port twice.
    const LOW: u32 = 20_000;
    const SPAN: u32 = 32_768 - LOW;
    static NEXT: std::sync::Mutex<Option<u32>> = std::sync::Mutex::new(None);
    let mut next = NEXT.lock().unwrap_or_else(|p| p.into_inner());
    let start = *next.get_or_insert(std::process::id().wrapping_mul(7_919) % SPAN);
    for step in 0..SPAN {
        let offset = (start + step) % SPAN;
        let port = (LOW + offset) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            *next = Some((offset + 1) % SPAN);
            return port;
        }
    }
    panic!("no free TCP port between {LOW} and 32767 on 127.0.0.1");
}

pub struct Daemon {
    pub token: TestToken,
    pub wardend: Option<Child>,
    /// Extra environment for wardend.
    pub wardend_env: Vec<(String, String)>,
    /// A command wardend runs under (e.g. strace and its flags); empty for none.
    pub wardend_wrapper: Vec<String>,
    /// Where the node side serves hsmd.Hsmd; wardend connects to it.
    pub hsmd_port: u16,
    pub admin_port: u16,
    pub pki: PathBuf,
    pub admin_keys: Vec<(String, PathBuf)>,
    pub policy: PathBuf,
    pub node_id_from_init: String,
    /// Where wardend serves /metrics.
    pub metrics_addr: String,
    /// A standby's metrics address, once it is ready.
    pub ready: Option<std::sync::mpsc::Receiver<String>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill_wardend();
    }
}

impl Daemon {
    /// A token initialised with `wardenctl init`, PKI and admin keys for alice, bob and carol,
    /// and a policy of those admins plus `policy_rules`. wardend is not started yet.
    pub fn prepare(label: &str, policy_rules: &str, hsmd_port: u16) -> Self {
        // The test matrix: WARDEN_TEST_STORE=postgres runs the same tests with wardend's state on
        // a database of their own on the harness's PostgreSQL server.
        let server = super::pg::matrix_is_postgres().then(super::pg::shared);
        Self::prepare_on(label, policy_rules, hsmd_port, server)
    }

    /// [`Daemon::prepare`], with the state on PostgreSQL (a database of its own on `server`)
    /// when one is given, whatever the matrix says.
    pub fn prepare_on(
        label: &str,
        policy_rules: &str,
        hsmd_port: u16,
        server: Option<&super::pg::PgServer>,
    ) -> Self {
        let mut token = TestToken::new(label);
        if let Some(pg) = server {
            token.store_env = pg.env(&pg.database(label));
            // Short leases: a restarted wardend waits out its crashed predecessor's lease.
            token.store_env.extend([
                ("WARDEN_STORE_LEASE_SECS".to_string(), "2".to_string()),
                ("WARDEN_STORE_RENEW_SECS".to_string(), "0.5".to_string()),
            ]);
        }
        let node_id_from_init = token.init();
        let pki = token.path().join("pki");
        // cln-node: the CLN plugin's certificate (a node's, once wardend names it in admin.nodes).
        warden::api::tls::init_pki(
            &pki,
            &[
                "alice".into(),
                "bob".into(),
                "carol".into(),
                "cln-node".into(),
            ],
        )
        .unwrap();
        let mut admins = String::new();
        let mut admin_keys = Vec::new();
        for name in ["alice", "bob", "carol"] {
            let k = AdminKey::generate();
            let p = token.path().join(format!("{name}.adminkey"));
            k.save(&p).unwrap();
            admins.push_str(&format!("{name} = {{ pubkey = \"{}\" }}\n", k.public_key()));
            admin_keys.push((name.to_string(), p));
        }
        let policy = token.path().join("policy.toml");
        std::fs::write(
            &policy,
            format!("version = 1\nname = \"e2e\"\n[admins]\n{admins}\n{policy_rules}"),
        )
        .unwrap();
        warden::policy::load_policy_file(&policy).unwrap_or_else(|e| panic!("{e}"));
        Daemon {
            token,
            wardend: None,
            wardend_env: Vec::new(),
            wardend_wrapper: Vec::new(),
            hsmd_port,
            admin_port: free_port(),
            pki,
            admin_keys,
            policy,
            node_id_from_init,
            metrics_addr: String::new(),
            ready: None,
        }
    }

    /// Put this wardend's state in fleet `fleet`'s database `db` on `server`, as `member`.
    pub fn join(&mut self, server: &super::pg::PgServer, db: &str, fleet: &str, member: &str) {
        self.token.store_env = server.env(db);
        self.token.store_env.extend(
            [
                ("WARDEN_STORE_LEASE_SECS", "2"),
                ("WARDEN_STORE_RENEW_SECS", "0.5"),
                ("WARDEN_FLEET_NAME", fleet),
                ("WARDEN_FLEET_MEMBER", member),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
    }

    /// The audit records of kind `kind`, from `wardenctl audit export` (readable while wardend
    /// runs on PostgreSQL).
    pub fn audit_records(&self, kind: &str) -> Vec<serde_json::Value> {
        let out = self
            .token
            .command("wardenctl")
            .args(["audit", "export", "--format", "jsonl"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["kind"] == kind)
            .collect()
    }

    /// Run `like`'s policy with `like`'s admin keys (a fleet's one policy).
    pub fn share_policy_of(&mut self, like: &Daemon) {
        std::fs::copy(&like.policy, &self.policy).unwrap();
        for ((_, from), (_, to)) in like.admin_keys.iter().zip(&self.admin_keys) {
            std::fs::copy(from, to).unwrap();
        }
    }

    pub fn start_wardend(&mut self) {
        self.spawn_wardend(true);
    }

    /// wardend (under `wrapper`) with this daemon's configuration in its environment.
    fn wardend_command(&self, wrapper: &[String]) -> Command {
        let mut c = self.token.command_via(wrapper, "wardend");
        c.env(
            "WARDEN_HSMD_ADDRESS",
            format!("127.0.0.1:{}", self.hsmd_port),
        )
        .env(
            "WARDEN_ADMIN_LISTEN",
            format!("127.0.0.1:{}", self.admin_port),
        )
        .env("WARDEN_ADMIN_TLS_CERT", self.pki.join("server.pem"))
        .env("WARDEN_ADMIN_TLS_KEY", self.pki.join("server.key"))
        .env("WARDEN_ADMIN_CLIENT_CA", self.pki.join("ca.pem"))
        .env("WARDEN_POLICY", &self.policy)
        .env("RUST_LOG", "warn")
        .envs(
            self.wardend_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        c
    }

    /// Run wardend as [`Daemon::start_wardend`] would, for a start that must be refused: its
    /// exit status and output (killed after 60 s if it started after all).
    pub fn run_wardend_to_exit(&self) -> std::process::Output {
        let child = self
            .wardend_command(&[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let watchdog = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(60));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        });
        drop(watchdog);
        child.wait_with_output().unwrap()
    }

    /// Start a second wardend on a database another one holds: it returns once the process says
    /// it is a standby; [`Daemon::wait_ready`] waits for it to take over.
    pub fn start_standby(&mut self) {
        self.spawn_wardend(false);
    }

    /// Wait up to `within` for a standby started with [`Daemon::start_standby`] to take the lease
    /// and be ready; how long it took.
    pub fn wait_ready(&mut self, within: Duration) -> Duration {
        let started = std::time::Instant::now();
        let rx = self.ready.take().expect("a standby was started");
        let metrics = rx
            .recv_timeout(within)
            .unwrap_or_else(|_| panic!("the standby was not ready within {within:?}"));
        self.metrics_addr = metrics;
        started.elapsed()
    }

    fn spawn_wardend(&mut self, active: bool) {
        let mut child = self
            .wardend_command(&self.wardend_wrapper)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = Vec::new();
        if !active {
            // A standby says so (and who holds the lease) before it waits, then where it serves
            // its metrics meanwhile.
            for line in lines.by_ref() {
                let line = line.unwrap();
                seen.push(line.clone());
                if let Some(url) = line.strip_prefix("standby metrics on http://") {
                    self.metrics_addr = url.trim_end_matches("/metrics").to_string();
                    break;
                }
                assert!(
                    !line.starts_with("wardend ready"),
                    "expected a standby: {seen:?}"
                );
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        // Until ready (a wardend on a shared database may first wait for a crashed one's lease),
        // then for its metrics address; stdout is read to its end in the background so wardend
        // never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut ready = false;
            for line in lines {
                let Ok(line) = line else { break };
                if line.starts_with("wardend ready") {
                    ready = true;
                }
                if let Some(url) = line.strip_prefix("metrics on http://") {
                    if ready {
                        let _ = tx.send(url.trim_end_matches("/metrics").to_string());
                    }
                }
            }
        });
        self.wardend = Some(child);
        if active {
            self.metrics_addr = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("wardend printed its ready line and its metrics address");
        } else {
            self.ready = Some(rx);
        }
    }

    /// A second wardend for the same node: a copy of this one's token (the same seed, sealed
    /// by the same HSM key, as an HSM cluster would hold it), admins, PKI and policy, on the
    /// same database and node, with an admin port of its own.
    pub fn twin(&self, label: &str) -> Daemon {
        let token = self.token.copy(label);
        let moved = |p: &std::path::Path| {
            token
                .path()
                .join(p.strip_prefix(self.token.path()).unwrap())
        };
        Daemon {
            wardend: None,
            wardend_env: self.wardend_env.clone(),
            wardend_wrapper: self.wardend_wrapper.clone(),
            hsmd_port: self.hsmd_port,
            admin_port: free_port(),
            pki: moved(&self.pki),
            admin_keys: self
                .admin_keys
                .iter()
                .map(|(n, p)| (n.clone(), moved(p)))
                .collect(),
            policy: moved(&self.policy),
            node_id_from_init: self.node_id_from_init.clone(),
            metrics_addr: String::new(),
            ready: None,
            token,
        }
    }

    /// wardend's process id.
    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.wardend.as_ref().expect("wardend runs").id() as i32)
    }

    /// SIGTERM and wait: a clean stop (wardend closes the audit log with a checkpoint).
    pub fn stop_wardend(&mut self) {
        if let Some(mut c) = self.wardend.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }

    /// SIGKILL: a crash, not a clean stop.
    pub fn kill_wardend(&mut self) {
        if let Some(mut c) = self.wardend.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn wardenctl(&self, admin: &str, args: &[&str]) -> std::process::Output {
        let mut c = self.token.command("wardenctl");
        c.args(args)
            .env(
                "WARDENCTL_SERVER",
                format!("https://localhost:{}", self.admin_port),
            )
            .env("WARDENCTL_CA", self.pki.join("ca.pem"))
            .env("WARDENCTL_CERT", self.pki.join(format!("{admin}.pem")))
            .env("WARDENCTL_CERT_KEY", self.pki.join(format!("{admin}.key")))
            .env("WARDENCTL_ADMIN", admin);
        c.output().unwrap()
    }

    /// `admin` approves request `id` with wardenctl and their own key; it must succeed.
    pub fn approve(&self, admin: &str, id: &str) {
        let out = self.wardenctl(admin, &["approve", id, "--key", &self.admin_key(admin)]);
        assert!(
            out.status.success(),
            "{admin} approving {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn admin_key(&self, admin: &str) -> String {
        self.admin_keys
            .iter()
            .find(|(n, _)| n == admin)
            .unwrap()
            .1
            .display()
            .to_string()
    }

    /// The pending requests, as `wardenctl pending --json` prints them.
    pub fn pending(&self) -> serde_json::Value {
        for _ in 0..100 {
            let out = self.wardenctl("alice", &["pending", "--json"]);
            if out.status.success() {
                return serde_json::from_slice(&out.stdout).unwrap();
            }
            // The admin API may still be starting after a restart.
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("wardenctl pending never succeeded");
    }
}

impl Daemon {
    /// Scrape /metrics and parse the text format into `name{labels}` → value.
    pub async fn scrape_metrics(&self) -> std::collections::HashMap<String, f64> {
        let resp = reqwest::get(format!("http://{}/metrics", self.metrics_addr))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
        // Anything else is not served.
        let other = reqwest::get(format!("http://{}/other", self.metrics_addr))
            .await
            .unwrap();
        assert_eq!(other.status(), 404);
        let body = resp.text().await.unwrap();
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l}"));
                (
                    k.to_string(),
                    v.parse::<f64>()
                        .unwrap_or_else(|_| panic!("bad value in {l}")),
                )
            })
            .collect()
    }

    /// A standby's role and the active wardend's lease epoch, from its /metrics.
    pub async fn scrape_standby_role(&self) -> (String, f64) {
        let m = self.scrape_metrics().await;
        let role = ["active", "standby", "deposed"]
            .into_iter()
            .find(|r| m.get(&format!("warden_ha_role{{name=\"{r}\"}}")) == Some(&1.0))
            .unwrap_or_else(|| panic!("no warden_ha_role of 1 in {m:?}"))
            .to_string();
        (role, m["warden_ha_epoch"])
    }

    /// An admin API client (alice's certificate), retrying while wardend starts.
    pub async fn admin_client(
        &self,
    ) -> warden::api::proto::warden_client::WardenClient<tonic::transport::Channel> {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(
                std::fs::read(self.pki.join("ca.pem")).unwrap(),
            ))
            .identity(Identity::from_pem(
                std::fs::read(self.pki.join("alice.pem")).unwrap(),
                std::fs::read(self.pki.join("alice.key")).unwrap(),
            ))
            .domain_name("localhost");
        for _ in 0..100 {
            let ep = Endpoint::from_shared(format!("https://localhost:{}", self.admin_port))
                .unwrap()
                .tls_config(tls.clone())
                .unwrap();
            if let Ok(ch) = ep.connect().await {
                return warden::api::proto::warden_client::WardenClient::new(ch);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("admin API not reachable");
    }

    /// wardend's Status.
    pub async fn status(&self) -> warden::api::proto::StatusResponse {
        self.admin_client()
            .await
            .status(warden::api::proto::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    /// The current use of the rolling window `tag`, from wardend's Status.
    pub async fn window(&self, tag: &str) -> warden::api::proto::WindowUsage {
        self.status()
            .await
            .windows
            .into_iter()
            .find(|w| w.tag == tag)
            .unwrap_or_else(|| panic!("no window {tag}"))
    }

    /// Subscribe to events; the returned stream sees everything after this call.
    pub async fn watch(&self) -> tonic::Streaming<warden::api::proto::Event> {
        self.admin_client()
            .await
            .watch_events(warden::api::proto::WatchEventsRequest {})
            .await
            .unwrap()
            .into_inner()
    }
}

/// The next event of `kind` within 10 s.
pub async fn next_event(
    stream: &mut tonic::Streaming<warden::api::proto::Event>,
    kind: warden::api::proto::EventKind,
) -> warden::api::proto::Event {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = stream.message().await.unwrap().expect("event stream open");
            if e.kind == kind as i32 {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind:?} event"))
}
