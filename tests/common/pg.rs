//! A throwaway PostgreSQL server for the tests: `initdb` and `pg_ctl` from Debian's postgresql
//! package (installed by scripts/setup.sh), a cluster in a temporary directory, listening on a
//! loopback port with password (SCRAM) authentication. No system service is used.
//!
//! [`shared`] starts one server per test binary, on first use; every test makes its own
//! database on it ([`PgServer::database`]). A test that stops or restarts the server starts a
//! [`PgServer::private`] one. A watchdog process stops the server and deletes its directory
//! once the test binary has exited, however it exited.
//!
//! PostgreSQL refuses to run as root, so as root (CI) the cluster belongs to the `postgres`
//! user the package creates, and its commands run under that uid.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub const SUPERUSER: &str = "warden";
pub const PASSWORD: &str = "warden-test-password";

pub struct PgServer {
    pub dir: PathBuf,
    pub port: u16,
    /// The password, in a file wardend reads (store.password_file).
    pub password_file: PathBuf,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
}

/// The directory of the installed PostgreSQL's server programs.
fn bindir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .expect("PostgreSQL's server programs (initdb, pg_ctl) under /usr/lib/postgresql/*/bin: run scripts/setup.sh")
}

/// The `postgres` user's uid and gid, when running as root.
fn owner() -> Option<(u32, u32)> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("a postgres user (created by Debian's postgresql package: run scripts/setup.sh)");
    let f: Vec<&str> = line.split(':').collect();
    Some((f[2].parse().unwrap(), f[3].parse().unwrap()))
}

/// Whether this run is the PostgreSQL leg of the test matrix (`WARDEN_TEST_STORE=postgres`).
pub fn matrix_is_postgres() -> bool {
    match std::env::var("WARDEN_TEST_STORE").as_deref() {
        Ok("postgres") => true,
        Ok("sled" | "log") | Err(_) => false,
        Ok(other) => panic!("WARDEN_TEST_STORE={other}: use sled, log or postgres"),
    }
}

/// Whether this run is the leg on sled (`WARDEN_TEST_STORE=sled`); every other local run keeps
/// its state in Warden's append-only log, the default.
pub fn matrix_is_sled() -> bool {
    std::env::var("WARDEN_TEST_STORE").as_deref() == Ok("sled")
}

pub fn shared() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(PgServer::private)
}

impl PgServer {
    /// A server of this test's own.
    pub fn private() -> Self {
        let bin = bindir();
        let owner = owner();
        let dir = tempfile::Builder::new()
            .prefix("warden-pg-")
            .tempdir()
            .unwrap()
            .keep();
        let password_file = dir.join("password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(&password_file, Some(uid), Some(gid)).unwrap();
        }
        let port = super::daemon::free_port();
        let server = PgServer {
            dir,
            port,
            password_file,
            bin,
            owner,
        };
        let out = server
            .cmd("initdb")
            .args(["-D", "data", "-U", SUPERUSER, "--auth-host=scram-sha-256"])
            .args([
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-instructions",
            ])
            .arg(format!("--pwfile={}", server.password_file.display()))
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(
            server.dir.join("data/postgresql.auto.conf"),
            format!(
                "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nmax_connections = 300\nshared_buffers = '64MB'\nsynchronous_commit = on\nfsync = on\n",
                server.dir.display()
            ),
        )
        .unwrap();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(
                server.dir.join("data/postgresql.auto.conf"),
                Some(uid),
                Some(gid),
            )
            .unwrap();
        }
        server.start();
        server.watchdog();
        server
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.current_dir(&self.dir).env_remove("PGPASSWORD");
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid);
        }
        c
    }

    /// Start (again) and wait until it accepts connections.
    pub fn start(&self) {
        let out = self
            .cmd("pg_ctl")
            .args(["-D", "data", "-l", "log", "-w", "-t", "60", "start"])
            .stdout(Stdio::null())
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    /// Stop at once (`immediate`: as a crash would, no checkpoint) and wait.
    pub fn stop(&self) {
        let out = self
            .cmd("pg_ctl")
            .args(["-D", "data", "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stop the server and remove its directory once this test binary has exited.
    fn watchdog(&self) {
        let script = format!(
            "while [ -e /proc/{parent} ]; do sleep 0.5; done; {pg_ctl} -D data -m immediate stop >/dev/null 2>&1; cd /; rm -rf '{dir}'",
            parent = std::process::id(),
            pg_ctl = self.bin.join("pg_ctl").display(),
            dir = self.dir.display()
        );
        // The same uid and directory as the server's own commands, but a shell.
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(script).current_dir(&self.dir);
        if let Some((uid, gid)) = self.owner {
            sh.uid(uid).gid(gid);
        }
        let watchdog = sh
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("the watchdog starts");
        // It outlives this process on purpose (that is its job); reaped by init.
        std::mem::forget(watchdog);
    }

    /// Run SQL as the superuser on `db`.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
            ])
            .args(["-d", db, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A new, empty database of this test's own, named after `label`.
    pub fn database(&self, label: &str) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{}_{}_{}",
            label
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                })
                .collect::<String>(),
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// libpq parameters for `db`, without the password.
    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={SUPERUSER} dbname={db}",
            self.port
        )
    }

    /// Settings for a wardend (or a test's backend) on `db`.
    pub fn settings(&self, db: &str, holder: &str) -> warden::store::postgres::PgSettings {
        warden::store::postgres::PgSettings {
            conninfo: self.conninfo(db),
            password: Some(zeroize::Zeroizing::new(PASSWORD.into())),
            tls: warden::store::postgres::PgTls::Disable,
            lease: std::time::Duration::from_secs(3),
            renew: std::time::Duration::from_millis(500),
            holder: holder.into(),
            fleet: None,
        }
    }

    /// The environment that puts a wardend (or wardenctl) on `db`.
    pub fn env(&self, db: &str) -> Vec<(String, String)> {
        vec![
            ("WARDEN_STORE_BACKEND".into(), "postgres".into()),
            ("WARDEN_STORE_URL".into(), self.conninfo(db)),
            (
                "WARDEN_STORE_PASSWORD_FILE".into(),
                self.password_file.display().to_string(),
            ),
        ]
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}
