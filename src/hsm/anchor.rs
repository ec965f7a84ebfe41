//! The audit chain's anchor on the token: the newest checkpoint's sequence number and chain
//! head, kept as a PKCS#11 data object where someone with write access to the database but not
//! the token's PIN cannot roll it back. wardend refuses to start on an audit log that ends
//! before its anchor, and the verifier reports such a log as truncated.

use super::{Hsm, HsmError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};

/// Label of the data object holding the anchor.
pub const AUDIT_ANCHOR_LABEL: &str = "warden-audit-anchor";
/// Format byte of the anchor's value: version, then seq (u64 BE), then the 32-byte head.
const VERSION: u8 = 1;

/// Label of the data object holding the policy anchor.
pub const POLICY_ANCHOR_LABEL: &str = "warden-policy-anchor";

/// The newest version of the policy history the token has seen in force: where the database
/// cannot roll it back, so a history deleted or cut back to an older (once approved) version is
/// refused at start and at takeover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyAnchor {
    /// The version's place in the policy history, from 1.
    pub version: u64,
    /// Its policy hash.
    pub hash: [u8; 32],
}

impl PolicyAnchor {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(41);
        v.push(VERSION);
        v.extend_from_slice(&self.version.to_be_bytes());
        v.extend_from_slice(&self.hash);
        v
    }

    fn decode(v: &[u8]) -> Result<Self, String> {
        let a = AuditAnchor::decode(v)?;
        Ok(PolicyAnchor {
            version: a.seq,
            hash: a.head,
        })
    }
}

/// The newest checkpointed chain head the token has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditAnchor {
    /// The checkpointed record's sequence number.
    pub seq: u64,
    /// That record's hash.
    pub head: [u8; 32],
}

impl AuditAnchor {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(41);
        v.push(VERSION);
        v.extend_from_slice(&self.seq.to_be_bytes());
        v.extend_from_slice(&self.head);
        v
    }

    fn decode(v: &[u8]) -> Result<Self, String> {
        if v.len() != 41 || v[0] != VERSION {
            return Err(format!(
                "{} bytes, format {}; expected 41 bytes of format {VERSION}",
                v.len(),
                v.first().copied().unwrap_or(0)
            ));
        }
        Ok(AuditAnchor {
            seq: u64::from_be_bytes(v[1..9].try_into().expect("8 bytes")),
            head: v[9..].try_into().expect("32 bytes"),
        })
    }
}

fn value_of(
    s: &cryptoki::session::Session,
    h: cryptoki::object::ObjectHandle,
) -> Result<Vec<u8>, HsmError> {
    let attrs = s
        .get_attributes(h, &[AttributeType::Value])
        .map_err(|e| HsmError::op("C_GetAttributeValue", e))?;
    Ok(attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::Value(v) => Some(v),
            _ => None,
        })
        .unwrap_or_default())
}

fn find_data<T>(
    s: &cryptoki::session::Session,
    label: &str,
    what: &'static str,
    decode: fn(&[u8]) -> Result<T, String>,
) -> Result<Vec<(cryptoki::object::ObjectHandle, T)>, HsmError> {
    let found = s
        .find_objects(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Label(label.into()),
        ])
        .map_err(|e| HsmError::op("C_FindObjects", e))?;
    found
        .into_iter()
        .map(|h| {
            let a = decode(&value_of(s, h)?)
                .map_err(|detail| HsmError::BadHsmOutput { what, detail })?;
            Ok((h, a))
        })
        .collect()
}

fn find_anchors(
    s: &cryptoki::session::Session,
) -> Result<Vec<(cryptoki::object::ObjectHandle, AuditAnchor)>, HsmError> {
    find_data(s, AUDIT_ANCHOR_LABEL, "audit anchor", AuditAnchor::decode)
}

fn find_policy_anchors(
    s: &cryptoki::session::Session,
) -> Result<Vec<(cryptoki::object::ObjectHandle, PolicyAnchor)>, HsmError> {
    find_data(
        s,
        POLICY_ANCHOR_LABEL,
        "policy anchor",
        PolicyAnchor::decode,
    )
}

/// Write `value` under `label` as a new token object, then remove `old` (tokens differ in
/// whether a data object's value may be changed in place; a crash in between leaves both, and
/// the newer one counts).
fn replace_data(
    s: &cryptoki::session::Session,
    label: &str,
    value: Vec<u8>,
    old: Vec<cryptoki::object::ObjectHandle>,
) -> Result<(), HsmError> {
    s.create_object(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Label(label.into()),
        Attribute::Application("warden".into()),
        Attribute::Value(value),
    ])
    .map_err(|e| HsmError::op("C_CreateObject (anchor)", e))?;
    for h in old {
        s.destroy_object(h)
            .map_err(|e| HsmError::op("C_DestroyObject (old anchor)", e))?;
    }
    Ok(())
}

impl Hsm {
    /// The anchor, if one was written (a token from before anchors, or a fresh log, has none).
    pub fn audit_anchor(&self) -> Result<Option<AuditAnchor>, HsmError> {
        self.with_session(|s| {
            // Moving the anchor writes the new object before it removes the old one, so a crash
            // in between leaves two: the newer one counts.
            Ok(find_anchors(s)?
                .into_iter()
                .map(|(_, a)| a)
                .max_by_key(|a| a.seq))
        })
    }

    /// Move the anchor forward to `anchor`; an anchor at or past it is left as it is, so the
    /// anchor never goes back. Tokens differ in whether a data object's value may be changed in
    /// place, so the new anchor is a new object, and the old ones are removed after it exists.
    pub fn advance_audit_anchor(&self, anchor: &AuditAnchor) -> Result<(), HsmError> {
        self.with_session(|s| {
            let old = find_anchors(s)?;
            if old.iter().any(|(_, a)| a.seq >= anchor.seq) {
                return Ok(());
            }
            replace_data(
                s,
                AUDIT_ANCHOR_LABEL,
                anchor.encode(),
                old.into_iter().map(|(h, _)| h).collect(),
            )
        })
    }

    /// The policy anchor, if one was written (a token from before policy anchors has none).
    pub fn policy_anchor(&self) -> Result<Option<PolicyAnchor>, HsmError> {
        self.with_session(|s| {
            Ok(find_policy_anchors(s)?
                .into_iter()
                .map(|(_, a)| a)
                .max_by_key(|a| a.version))
        })
    }

    /// Move the policy anchor forward to `anchor` (never back).
    pub fn advance_policy_anchor(&self, anchor: &PolicyAnchor) -> Result<(), HsmError> {
        self.with_session(|s| {
            let old = find_policy_anchors(s)?;
            if old.iter().any(|(_, a)| a.version >= anchor.version) {
                return Ok(());
            }
            replace_data(
                s,
                POLICY_ANCHOR_LABEL,
                anchor.encode(),
                old.into_iter().map(|(h, _)| h).collect(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_round_trip_and_bad_values_are_named() {
        let a = AuditAnchor {
            seq: 4_242,
            head: [7; 32],
        };
        assert_eq!(AuditAnchor::decode(&a.encode()), Ok(a));
        assert_eq!(
            AuditAnchor::decode(&[2; 41]).unwrap_err(),
            "41 bytes, format 2; expected 41 bytes of format 1"
        );
    }
}
