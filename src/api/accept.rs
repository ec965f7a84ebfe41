//! What an unauthenticated client can hold on the admin port, bounded: connections that are
//! open at once (a slot held for the life of the connection), and handshakes in progress from
//! one source address, so a flood of handshakes that never finish from one address cannot take
//! every handshake slot from the admins.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

/// Connections open at once, authenticated or not; more are dropped unanswered.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections one client certificate may hold open at once, so that one certificate (a
/// compromised node's, say) cannot take every connection from the admins.
pub const MAX_CONNECTIONS_PER_CERTIFICATE: usize = 8;
/// Handshakes in progress at once from one source address.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 8;

/// The source a client is counted as: its IPv4 address, or the /64 of its IPv6 address (one
/// host is usually given a whole /64, and could otherwise rotate past every per-source bound).
pub fn source_of(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(a) => a.to_string(),
        std::net::IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = a.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// A connection that holds its slot, and its count against its certificate, until dropped.
pub struct Slotted<T> {
    inner: T,
    _slot: OwnedSemaphorePermit,
    _counted: Option<InProgress>,
}

impl<T> Slotted<T> {
    /// `inner`, holding `slot` and `counted` while it lives.
    pub fn new(inner: T, slot: OwnedSemaphorePermit, counted: Option<InProgress>) -> Self {
        Slotted {
            inner,
            _slot: slot,
            _counted: counted,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Slotted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Slotted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

// The client certificate reaches the service through the TLS stream's connect info.
impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Slotted<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Things in progress per key (handshakes per source address, connections per certificate),
/// each key at most `max` at once.
#[derive(Clone)]
pub struct PerSource {
    counts: Arc<Mutex<HashMap<[u8; 32], usize>>>,
    max: usize,
}

/// One thing counted against its key until dropped.
pub struct InProgress {
    counts: Arc<Mutex<HashMap<[u8; 32], usize>>>,
    source: [u8; 32],
}

impl PerSource {
    /// At most `max` at once per key.
    pub fn new(max: usize) -> Self {
        PerSource {
            counts: Arc::default(),
            max,
        }
    }

    /// Count one more for `source`, or `None` when it already has the most allowed.
    pub fn begin(&self, source: [u8; 32]) -> Option<InProgress> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(source).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(InProgress {
            counts: self.counts.clone(),
            source,
        })
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::5".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: std::net::IpAddr = "2001:db8:1:3::5".parse().unwrap();
        assert_eq!(source_of(a), "2001:db8:1:2::/64");
        assert_eq!(source_of(a), source_of(b));
        assert_ne!(source_of(a), source_of(c));
        assert_eq!(source_of("127.0.0.2".parse().unwrap()), "127.0.0.2");
        assert_eq!(source_of("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1");
    }

    #[test]
    fn a_source_may_hold_only_so_many_handshakes_and_gets_them_back() {
        let p = PerSource::new(MAX_HANDSHAKES_PER_SOURCE);
        let held: Vec<_> = (0..MAX_HANDSHAKES_PER_SOURCE)
            .map(|_| p.begin([1; 32]).expect("under the bound"))
            .collect();
        assert!(p.begin([1; 32]).is_none(), "one more than the bound");
        assert!(p.begin([2; 32]).is_some(), "another source is not affected");
        drop(held);
        assert!(p.begin([1; 32]).is_some(), "released when they end");
        assert!(
            p.counts.lock().unwrap().len() <= 1,
            "no entry kept for idle sources"
        );
    }
}
