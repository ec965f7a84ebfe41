//! The on-disk format of the sealed node seed.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "WSDS" (Warden Sealed Data, Seed)
//! 4       1     format version (1)
//! 5       12    AES-GCM IV, random per sealing
//! 17      48    ciphertext (32-byte seed) || 16-byte GCM tag
//! ```
//! The associated data binds the blob to its purpose and format version, so a blob sealed for
//! another purpose by the same HSM key, or a blob whose version byte was edited, fails to open.

use zeroize::Zeroizing;

/// The magic that starts every sealed seed file.
pub const MAGIC: [u8; 4] = *b"WSDS";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Length of the GCM IV.
pub const IV_LEN: usize = 12;
/// Length of the GCM tag, in bytes.
pub const TAG_LEN: usize = 16;
/// Length of the node seed.
pub const SEED_LEN: usize = 32;
/// Total length of a version-1 blob.
pub const BLOB_LEN: usize = 4 + 1 + IV_LEN + SEED_LEN + TAG_LEN;

/// The node seed in memory: zeroized when dropped, redacted in `Debug`, never `Display`ed.
pub struct NodeSeed(Zeroizing<[u8; SEED_LEN]>);

impl NodeSeed {
    /// Wrap seed bytes. Prefer [`NodeSeed::zeroed`] and filling in place, which leaves no
    /// stack copy behind.
    pub fn new(bytes: [u8; SEED_LEN]) -> Self {
        NodeSeed(Zeroizing::new(bytes))
    }

    /// An all-zero seed to be filled in place.
    pub fn zeroed() -> Self {
        NodeSeed(Zeroizing::new([0u8; SEED_LEN]))
    }

    /// The seed bytes, for the one caller that must have them: the VLS node.
    pub fn as_slice(&self) -> &[u8] {
        self.0.as_slice()
    }

    /// A second zeroizing copy, for the signer's restore path.
    pub fn duplicate(&self) -> Self {
        NodeSeed(Zeroizing::new(*self.0))
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        self.0.as_mut_slice()
    }
}

impl std::fmt::Debug for NodeSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeSeed(<redacted>)")
    }
}

/// The associated data for sealing: purpose and format version.
pub fn associated_data(version: u8) -> Vec<u8> {
    let mut aad = b"warden/node-seed/v".to_vec();
    aad.extend_from_slice(version.to_string().as_bytes());
    aad
}

/// A parsed sealed blob, still encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSeed {
    /// The GCM IV used when sealing.
    pub iv: [u8; IV_LEN],
    /// Ciphertext followed by the tag, exactly as PKCS#11 returns it.
    pub ciphertext_and_tag: Vec<u8>,
}

impl SealedSeed {
    /// Serialize for the data directory.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BLOB_LEN);
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.iv);
        out.extend_from_slice(&self.ciphertext_and_tag);
        out
    }

    /// Parse a blob, naming precisely what is wrong with a bad one.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < 5 {
            return Err(format!(
                "truncated: {} bytes, a sealed seed has {BLOB_LEN}",
                bytes.len()
            ));
        }
        if bytes[..4] != MAGIC {
            return Err("not a Warden sealed seed (bad magic bytes)".into());
        }
        if bytes[4] != FORMAT_VERSION {
            return Err(format!(
                "format version {} is not supported by this build (it reads version {FORMAT_VERSION})",
                bytes[4]
            ));
        }
        if bytes.len() != BLOB_LEN {
            return Err(format!(
                "{}: {} bytes, a version-{FORMAT_VERSION} sealed seed has exactly {BLOB_LEN}",
                if bytes.len() < BLOB_LEN {
                    "truncated"
                } else {
                    "trailing data"
                },
                bytes.len()
            ));
        }
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&bytes[5..5 + IV_LEN]);
        Ok(SealedSeed {
            iv,
            ciphertext_and_tag: bytes[5 + IV_LEN..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SealedSeed {
        SealedSeed {
            iv: [9u8; IV_LEN],
            ciphertext_and_tag: vec![5u8; SEED_LEN + TAG_LEN],
        }
    }

    #[test]
    fn round_trips() {
        let s = sample();
        let bytes = s.to_bytes();
        assert_eq!(bytes.len(), BLOB_LEN);
        assert_eq!(SealedSeed::from_bytes(&bytes).unwrap(), s);
    }

    #[test]
    fn truncated_blob_says_truncated() {
        let bytes = sample().to_bytes();
        let err = SealedSeed::from_bytes(&bytes[..40]).unwrap_err();
        assert!(err.starts_with("truncated: 40 bytes"), "{err}");
        let err = SealedSeed::from_bytes(&bytes[..3]).unwrap_err();
        assert!(err.starts_with("truncated: 3 bytes"), "{err}");
    }

    #[test]
    fn wrong_version_names_both_versions() {
        let mut bytes = sample().to_bytes();
        bytes[4] = 7;
        let err = SealedSeed::from_bytes(&bytes).unwrap_err();
        assert!(err.contains("format version 7 is not supported"), "{err}");
        assert!(err.contains("reads version 1"), "{err}");
    }

    #[test]
    fn bad_magic_and_trailing_data_are_named() {
        let mut bytes = sample().to_bytes();
        bytes[0] = b'X';
        assert!(SealedSeed::from_bytes(&bytes)
            .unwrap_err()
            .contains("bad magic"));
        let mut long = sample().to_bytes();
        long.push(0);
        assert!(SealedSeed::from_bytes(&long)
            .unwrap_err()
            .starts_with("trailing data"));
    }

    #[test]
    fn seed_debug_is_redacted() {
        let seed = NodeSeed::new([0xab; SEED_LEN]);
        let shown = format!("{seed:?}");
        assert_eq!(shown, "NodeSeed(<redacted>)");
        assert!(!shown.to_lowercase().contains("ab, ab") && !shown.contains("171"));
    }

    #[test]
    fn associated_data_names_purpose_and_version() {
        assert_eq!(associated_data(1), b"warden/node-seed/v1".to_vec());
    }
}
