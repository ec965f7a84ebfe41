//! CLN's side of the hsmd wire protocol: length-prefixed messages over a Unix socket, and a new
//! socket per peer passed with SCM_RIGHTS after `ClientHsmFd`, exactly as lightningd does.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;
use vls_protocol::msgs::{self, DeBolt, Message};
use vls_protocol::serde_bolt::io::FromStd;

/// One hsmd connection: the root one, or a per-peer one.
pub struct HsmdConn {
    stream: FromStd<UnixStream>,
}

impl std::fmt::Debug for HsmdConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmdConn").finish_non_exhaustive()
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum HsmdError {
    /// The socket failed or closed (the proxy exited).
    #[error("hsmd socket: {0}")]
    Io(String),
    /// The reply did not decode.
    #[error("hsmd protocol: {0}")]
    Protocol(String),
}

impl HsmdConn {
    /// Wrap a connected socket; calls time out after `timeout`.
    pub fn new(stream: UnixStream, timeout: Duration) -> io::Result<Self> {
        stream.set_read_timeout(Some(timeout))?;
        Ok(HsmdConn {
            stream: FromStd::new(stream),
        })
    }

    /// Send a message and read the reply.
    pub fn call<T: DeBolt + lightning_signer::bitcoin::consensus::Encodable>(
        &mut self,
        msg: T,
    ) -> Result<Message, HsmdError> {
        msgs::write(&mut self.stream, msg).map_err(|e| HsmdError::Io(format!("{e:?}")))?;
        self.read()
    }

    /// Send raw bytes (a framed message body) and read the reply: for malformed-input tests.
    pub fn call_raw(&mut self, body: Vec<u8>) -> Result<Message, HsmdError> {
        msgs::write_vec(&mut self.stream, body).map_err(|e| HsmdError::Io(format!("{e:?}")))?;
        self.read()
    }

    fn read(&mut self) -> Result<Message, HsmdError> {
        msgs::read(&mut self.stream).map_err(|e| match e {
            vls_protocol::Error::Eof
            | vls_protocol::Error::Io(_)
            | vls_protocol::Error::ShortRead => HsmdError::Io(format!("{e:?}")),
            other => HsmdError::Protocol(format!("{other:?}")),
        })
    }

    /// Open a per-peer connection (`ClientHsmFd`), as lightningd does for each channel.
    pub fn new_client(
        &mut self,
        peer_id: [u8; 33],
        dbid: u64,
        capabilities: u64,
    ) -> Result<HsmdConn, HsmdError> {
        let reply = self.call(msgs::ClientHsmFd {
            peer_id: vls_protocol::model::PubKey(peer_id),
            dbid,
            capabilities,
        })?;
        if !matches!(reply, Message::ClientHsmFdReply(_)) {
            return Err(HsmdError::Protocol(format!(
                "expected ClientHsmFdReply, got {reply:?}"
            )));
        }
        let fd = recv_fd(self.stream.inner())?;
        HsmdConn::new(UnixStream::from(fd), Duration::from_secs(60))
            .map_err(|e| HsmdError::Io(e.to_string()))
    }
}

fn recv_fd(stream: &UnixStream) -> Result<OwnedFd, HsmdError> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(std::os::fd::RawFd);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .map_err(|e| HsmdError::Io(format!("recvmsg: {e}")))?;
    for cmsg in msg.cmsgs().map_err(|e| HsmdError::Io(e.to_string()))? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let [fd] = fds.as_slice() {
                return Ok(adopt(*fd));
            }
        }
    }
    Err(HsmdError::Protocol(
        "ClientHsmFd: no file descriptor was passed".into(),
    ))
}

/// Take ownership of a descriptor the kernel just installed for us via SCM_RIGHTS.
#[allow(unsafe_code)]
fn adopt(fd: std::os::fd::RawFd) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: `fd` was created by recvmsg(SCM_RIGHTS) for this process, is open, and nothing
    // else owns it; wrapping it once gives it exactly one owner that closes it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
