//! Invoices already parsed in full by a check, so the preapproval that follows is not parsed
//! twice before VLS parses it a third time.
//!
//! A payment on either node kind is a check and then a preapproval of the same invoice: the CLN
//! plugin and the LDK library ask `check` first, and the stream then screens the preapproval for
//! what VLS would answer with a fatal error (an unparsable invoice, one without an amount).
//! Each of those parses recovers the payee's key from the invoice's signature, the most
//! expensive step of a preapproval after VLS's own. The screen's verdict depends only on the
//! invoice's text, so a text the check parsed and found to carry an amount needs no second
//! parse: this remembers such texts by their SHA-256, the most recent [`KEPT`] of them.

use lightning_signer::bitcoin::hashes::{sha256, Hash};
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// Texts remembered; a check is followed by its preapproval within a few requests.
pub const KEPT: usize = 1_024;

/// A bounded set of invoice texts known to parse, with an amount.
#[derive(Default)]
pub struct ParsedInvoices(Mutex<Kept>);

impl std::fmt::Debug for ParsedInvoices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|k| k.set.len()).unwrap_or(0);
        f.debug_struct("ParsedInvoices").field("kept", &n).finish()
    }
}

#[derive(Default)]
struct Kept {
    order: VecDeque<[u8; 32]>,
    set: HashSet<[u8; 32]>,
}

impl ParsedInvoices {
    /// `text` parsed in full as an invoice with an amount.
    pub fn remember(&self, text: &str) {
        let digest = sha256::Hash::hash(text.as_bytes()).to_byte_array();
        let mut k = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !k.set.insert(digest) {
            return;
        }
        k.order.push_back(digest);
        if k.order.len() > KEPT {
            if let Some(old) = k.order.pop_front() {
                k.set.remove(&old);
            }
        }
    }

    /// Whether `text` is one [`ParsedInvoices::remember`] was given and still holds.
    pub fn known(&self, text: &[u8]) -> bool {
        let digest = sha256::Hash::hash(text).to_byte_array();
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set
            .contains(&digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_is_known_until_kept_newer_ones_push_it_out() {
        let p = ParsedInvoices::default();
        assert!(!p.known(b"lnbcrt1"));
        p.remember("lnbcrt1");
        assert!(p.known(b"lnbcrt1"));
        assert!(!p.known(b"lnbcrt2"), "only the exact text");
        // Remembering it again does not take a second place in the order.
        p.remember("lnbcrt1");
        for n in 2..=KEPT {
            p.remember(&format!("lnbcrt{n}"));
        }
        assert!(p.known(b"lnbcrt1"), "{KEPT} texts are kept");
        p.remember("one more");
        assert!(!p.known(b"lnbcrt1"), "the oldest goes first");
        assert!(p.known(b"lnbcrt2") && p.known(b"one more"));
    }
}
