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
/// Handshakes in progress at once from one source address.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 8;

/// A connection that holds its slot until it is dropped.
pub struct Slotted<T> {
    inner: T,
    _slot: OwnedSemaphorePermit,
}

impl<T> Slotted<T> {
    /// `inner`, holding `slot` while it lives.
    pub fn new(inner: T, slot: OwnedSemaphorePermit) -> Self {
        Slotted { inner, _slot: slot }
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

/// Handshakes in progress per source address.
#[derive(Clone, Default)]
pub struct PerSource {
    counts: Arc<Mutex<HashMap<[u8; 32], usize>>>,
}

/// One handshake counted against its source until dropped.
pub struct InProgress {
    counts: Arc<Mutex<HashMap<[u8; 32], usize>>>,
    source: [u8; 32],
}

impl PerSource {
    /// Count a handshake from `source`, or `None` when it already has the most allowed.
    pub fn begin(&self, source: [u8; 32]) -> Option<InProgress> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(source).or_default();
        if *n >= MAX_HANDSHAKES_PER_SOURCE {
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
    fn a_source_may_hold_only_so_many_handshakes_and_gets_them_back() {
        let p = PerSource::default();
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
