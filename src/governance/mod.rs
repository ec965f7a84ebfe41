//! The policy in force and its history: the policy is whatever the governance quorum last
//! approved, stored in the state database, not the file on disk (which is only a proposal).
//!
//! Layout (namespace `governance`): `v` + u64be(seq) → [`PolicyVersion`] (JSON), one per policy
//! that was ever in force, in order; the last one is in force. A version is written in the
//! same commit as the approval that makes it take effect, so a crash leaves either the old
//! policy in force with the change still approved, or the new one with the change consumed.
//! Proposals themselves are approval requests (`approval`, subject "policy change"); their
//! classification (what tightens, what loosens) is [`classify()`].

pub mod classify;

pub use classify::{classify, loosens, About, Change, Effect};

use crate::store::{Namespace, Store, StoreError};
use serde::{Deserialize, Serialize};

/// One policy that was in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// Position in the history, from 1.
    pub seq: u64,
    /// SHA-256 of the text, hex: the policy hash every decision carries.
    pub hash: String,
    /// The file text.
    pub text: String,
    /// The policy-change request that made it, or none for the first policy.
    pub request_id: Option<String>,
    /// The admins whose signatures approved it (empty for the first policy).
    pub approved_by: Vec<String>,
    /// When it was proposed (the first policy: when it was recorded).
    pub proposed_at: u64,
    /// When it took effect.
    pub took_effect_at: u64,
    /// How it differed from the policy before it.
    pub changes: Vec<Change>,
    /// The approval record that put it in force, with its signatures (JSON of an
    /// `approval::ApprovalRecord`), so every start can verify it again against the version
    /// before it; none for the first policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<serde_json::Value>,
}

impl PolicyVersion {
    /// The signer's first policy, as wardend records it on a new database at `now`: its text
    /// and hash, approved by nobody (its admins become the first governance quorum).
    pub fn first(hash: String, text: String, now: u64) -> Self {
        PolicyVersion {
            seq: 0,
            hash,
            text,
            request_id: None,
            approved_by: Vec::new(),
            proposed_at: now,
            took_effect_at: now,
            changes: Vec::new(),
            proof: None,
        }
    }
}

fn vkey(seq: u64) -> Vec<u8> {
    let mut k = vec![b'v'];
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn decode(k: &[u8], v: &[u8]) -> Result<PolicyVersion, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        key: format!("governance/{}", hex::encode(k)),
        detail: e.to_string(),
    })
}

/// The chain of policies in force.
#[derive(Debug, Clone)]
pub struct PolicyHistory {
    store: Store,
}

impl PolicyHistory {
    /// The history kept in `store`.
    pub fn new(store: &Store) -> Self {
        PolicyHistory {
            store: store.clone(),
        }
    }

    /// The policy in force; none before the first start recorded one.
    pub fn in_force(&self) -> Result<Option<PolicyVersion>, StoreError> {
        self.store
            .last(Namespace::Governance, b"v")?
            .map(|(k, v)| decode(&k, &v))
            .transpose()
    }

    /// Every policy that was in force, oldest first.
    pub fn all(&self) -> Result<Vec<PolicyVersion>, StoreError> {
        self.store
            .scan(Namespace::Governance, b"v")?
            .iter()
            .map(|(k, v)| decode(k, v))
            .collect()
    }

    /// Put `version` in force (its `seq` is assigned here), in the open transaction or one of
    /// its own.
    pub fn record(&self, mut version: PolicyVersion) -> Result<PolicyVersion, StoreError> {
        self.store.write(|| {
            version.seq = self.in_force()?.map(|v| v.seq + 1).unwrap_or(1);
            let json = serde_json::to_vec(&version).map_err(|e| StoreError::Io {
                op: "encode a policy version",
                detail: e.to_string(),
            })?;
            self.store
                .put(Namespace::Governance, vkey(version.seq), json)?;
            Ok(version)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(hash: &str) -> PolicyVersion {
        PolicyVersion {
            seq: 0,
            hash: hash.into(),
            text: format!("# {hash}"),
            request_id: None,
            approved_by: vec![],
            proposed_at: 1,
            took_effect_at: 2,
            changes: vec![],
            proof: None,
        }
    }

    #[test]
    fn the_last_recorded_version_is_in_force_and_the_history_keeps_every_one_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let h = PolicyHistory::new(&store);
        assert_eq!(h.in_force().unwrap(), None);
        h.record(version("aa")).unwrap();
        let second = h.record(version("bb")).unwrap();
        assert_eq!(second.seq, 2);
        assert_eq!(h.in_force().unwrap().unwrap().hash, "bb");
        let all: Vec<String> = h.all().unwrap().into_iter().map(|v| v.hash).collect();
        assert_eq!(all, vec!["aa", "bb"]);
        drop(h);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            PolicyHistory::new(&store).in_force().unwrap().unwrap().seq,
            2,
            "the policy in force survives a restart"
        );
    }
}
