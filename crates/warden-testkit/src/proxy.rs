//! Running VLS's real `remote_hsmd_socket` the way lightningd runs its hsmd: the hsmd socket on
//! file descriptor 3, configuration in the environment, a bitcoind it can reach.

use super::hsmd::HsmdConn;
use command_fds::{CommandFdExt, FdMapping};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The pinned VLS version whose proxy the project builds (scripts/setup.sh).
pub const VLS_VERSION: &str = "1.0.0-rc.1";
/// The CLN version the proxy reports (`VLS_CLN_VERSION`; only `--version` uses it).
pub const CLN_VERSION: &str = "v25.02";

/// Where setup.sh installs the proxy: `$WARDEN_REMOTE_HSMD_SOCKET`, else the version-keyed cache.
pub fn default_binary() -> PathBuf {
    if let Ok(p) = std::env::var("WARDEN_REMOTE_HSMD_SOCKET") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("WARDEN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| ".".into()))
                .join(".cache/warden")
        });
    cache.join(format!("vls-{VLS_VERSION}/bin/remote_hsmd_socket"))
}

/// A running `remote_hsmd_socket` and CLN's end of its hsmd socket.
#[derive(Debug)]
pub struct Proxy {
    child: Child,
    /// The root hsmd connection (lightningd's).
    pub hsmd: HsmdConn,
    /// The gRPC port wardend connects to.
    pub port: u16,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// Start the proxy on `port`, with `rpc_url` as its bitcoind and `datadir` for its files.
    /// The proxy runs in `datadir`: it writes its TXOO attestation (`public/`) into its working
    /// directory, which must not be the caller's checkout.
    pub fn spawn(binary: &Path, port: u16, rpc_url: &str, datadir: &Path) -> std::io::Result<Self> {
        if !binary.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} not found; run scripts/setup.sh", binary.display()),
            ));
        }
        let (ours, theirs) = UnixStream::pair()?;
        let theirs: OwnedFd = theirs.into();
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--datadir={}", datadir.display()))
            .current_dir(datadir)
            .env("VLS_PORT", port.to_string())
            .env("VLS_NETWORK", "regtest")
            .env("BITCOIND_RPC_URL", rpc_url)
            .env("VLS_CLN_VERSION", CLN_VERSION)
            .env(
                "RUST_LOG",
                std::env::var("WARDEN_PROXY_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            // Its log goes to stdout (and, buffered, to remote_hsmd_socket.log): kept in
            // datadir/proxy.out, written as it happens, for a failing test to show.
            .stdout(std::fs::File::create(datadir.join("proxy.out"))?)
            .stderr(Stdio::null());
        cmd.fd_mappings(vec![FdMapping {
            parent_fd: theirs,
            child_fd: 3,
        }])
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        let child = cmd.spawn()?;
        Ok(Proxy {
            child,
            hsmd: HsmdConn::new(ours, Duration::from_secs(120))?,
            port,
        })
    }

    /// Stop the proxy, as when the node goes away.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the proxy process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}
