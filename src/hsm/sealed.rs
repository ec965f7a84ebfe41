//! The on-disk format of the sealed node seed.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "WSDS" (Warden Sealed Data, Seed)
//! 4       1     format version (2)
//! 5       1     network the seed is for: 0 bitcoin, 1 testnet, 2 signet, 3 regtest
//! 6       16    seed id: SHA-256("warden/seed-id/v1" || seed), first 16 bytes
//! 22      12    AES-GCM IV, random per sealing
//! 34      48    ciphertext (32-byte seed) || 16-byte GCM tag
//! ```
//! The associated data is `"warden/node-seed/v2" || network || seed id`: a blob sealed for
//! another purpose, another network or another instance by the same HSM key, or one whose
//! header was edited, fails to open. The network and seed id are in clear too, so Warden can
//! say which mismatch it is before it asks the HSM. The state database records the seed id it
//! was created with, so a blob swapped in from another instance is refused at start.
//!
//! Version 1 (no network, no id; associated data `"warden/node-seed/v1"`) is still read, and
//! wardend rewrites it as version 2 once it holds the state database and the state accepted
//! the seed's id.
use lightning_signer::bitcoin::Network;
use zeroize::Zeroizing;

/// The magic that starts every sealed seed file.
pub const MAGIC: [u8; 4] = *b"WSDS";
/// The format version this build writes.
pub const FORMAT_VERSION: u8 = 2;
/// The older format this build still reads (and upgrades).
pub const LEGACY_VERSION: u8 = 1;
/// Length of the GCM IV.
pub const IV_LEN: usize = 12;
/// Length of the GCM tag, in bytes.
pub const TAG_LEN: usize = 16;
/// Length of the node seed.
pub const SEED_LEN: usize = 32;
/// Length of the seed id.
pub const SEED_ID_LEN: usize = 16;
/// Total length of a version-2 blob.
pub const BLOB_LEN: usize = 4 + 1 + 1 + SEED_ID_LEN + IV_LEN + SEED_LEN + TAG_LEN;
/// Total length of a version-1 blob.
pub const LEGACY_BLOB_LEN: usize = 4 + 1 + IV_LEN + SEED_LEN + TAG_LEN;

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

/// Which instance and network a sealed seed belongs to. Version-1 blobs have none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedBinding {
    /// The Bitcoin network the seed's keys are used on.
    pub network: Network,
    /// The seed's own id ([`SeedBinding::for_seed`]); recorded by the state database on its
    /// first start.
    pub seed_id: [u8; SEED_ID_LEN],
}

impl SeedBinding {
    /// The binding of `seed` on `network`. The id is the seed's own (a labelled SHA-256 of
    /// it, cut to 16 bytes), so a file restored from an older backup of the same seed, or
    /// upgraded from format 1, keeps the id its state recorded, and another seed never has it.
    pub fn for_seed(network: Network, seed: &NodeSeed) -> Self {
        use lightning_signer::bitcoin::hashes::{sha256, Hash, HashEngine};
        let mut e = sha256::Hash::engine();
        e.input(b"warden/seed-id/v1");
        e.input(seed.as_slice());
        let digest = sha256::Hash::from_engine(e).to_byte_array();
        let mut seed_id = [0u8; SEED_ID_LEN];
        seed_id.copy_from_slice(&digest[..SEED_ID_LEN]);
        SeedBinding { network, seed_id }
    }

    /// The seed id as operators see it in logs and errors.
    pub fn seed_id_hex(&self) -> String {
        hex::encode(self.seed_id)
    }
}

/// The one-byte network code of format 2.
pub fn network_code(network: Network) -> Option<u8> {
    match network {
        Network::Bitcoin => Some(0),
        Network::Testnet => Some(1),
        Network::Signet => Some(2),
        Network::Regtest => Some(3),
        _ => None,
    }
}

fn network_from_code(code: u8) -> Option<Network> {
    [
        Network::Bitcoin,
        Network::Testnet,
        Network::Signet,
        Network::Regtest,
    ]
    .into_iter()
    .find(|n| network_code(*n) == Some(code))
}

/// The associated data for sealing: purpose, format version and, from version 2, the binding.
pub fn associated_data(binding: Option<&SeedBinding>) -> Vec<u8> {
    match binding {
        None => b"warden/node-seed/v1".to_vec(),
        Some(b) => {
            let mut aad = b"warden/node-seed/v2".to_vec();
            aad.push(network_code(b.network).unwrap_or(u8::MAX));
            aad.extend_from_slice(&b.seed_id);
            aad
        }
    }
}

/// A parsed sealed blob, still encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSeed {
    /// The network and instance it is bound to; `None` for a version-1 blob.
    pub binding: Option<SeedBinding>,
    /// The GCM IV used when sealing.
    pub iv: [u8; IV_LEN],
    /// Ciphertext followed by the tag, exactly as PKCS#11 returns it.
    pub ciphertext_and_tag: Vec<u8>,
}

impl SealedSeed {
    /// Serialize for the data directory (version 2; a version-1 blob keeps its format).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BLOB_LEN);
        out.extend_from_slice(&MAGIC);
        match &self.binding {
            Some(b) => {
                out.push(FORMAT_VERSION);
                out.push(network_code(b.network).unwrap_or(u8::MAX));
                out.extend_from_slice(&b.seed_id);
            }
            None => out.push(LEGACY_VERSION),
        }
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
        let version = bytes[4];
        let expected = match version {
            FORMAT_VERSION => BLOB_LEN,
            LEGACY_VERSION => LEGACY_BLOB_LEN,
            other => {
                return Err(format!(
                    "format version {other} is not supported by this build (it reads versions {LEGACY_VERSION} and {FORMAT_VERSION})"
                ))
            }
        };
        if bytes.len() != expected {
            return Err(format!(
                "{}: {} bytes, a version-{version} sealed seed has exactly {expected}",
                if bytes.len() < expected {
                    "truncated"
                } else {
                    "trailing data"
                },
                bytes.len()
            ));
        }
        let (binding, rest) = if version == FORMAT_VERSION {
            let network = network_from_code(bytes[5]).ok_or_else(|| {
                format!(
                    "network code {} is not one this build knows (0 bitcoin, 1 testnet, 2 signet, 3 regtest)",
                    bytes[5]
                )
            })?;
            let mut seed_id = [0u8; SEED_ID_LEN];
            seed_id.copy_from_slice(&bytes[6..6 + SEED_ID_LEN]);
            (
                Some(SeedBinding { network, seed_id }),
                &bytes[6 + SEED_ID_LEN..],
            )
        } else {
            (None, &bytes[5..])
        };
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&rest[..IV_LEN]);
        Ok(SealedSeed {
            binding,
            iv,
            ciphertext_and_tag: rest[IV_LEN..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SealedSeed {
        SealedSeed {
            binding: Some(SeedBinding {
                network: Network::Signet,
                seed_id: [3u8; SEED_ID_LEN],
            }),
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
        assert!(err.contains("reads versions 1 and 2"), "{err}");
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
    fn associated_data_binds_network_and_seed_id() {
        assert_eq!(associated_data(None), b"warden/node-seed/v1".to_vec());
        let b = sample().binding.unwrap();
        let mut expected = b"warden/node-seed/v2".to_vec();
        expected.push(2);
        expected.extend_from_slice(&[3u8; SEED_ID_LEN]);
        assert_eq!(associated_data(Some(&b)), expected);
        let other_net = SeedBinding {
            network: Network::Bitcoin,
            ..b
        };
        assert_ne!(associated_data(Some(&other_net)), expected);
    }

    #[test]
    fn legacy_blobs_parse_without_a_binding() {
        let legacy = SealedSeed {
            binding: None,
            ..sample()
        };
        let bytes = legacy.to_bytes();
        assert_eq!(bytes.len(), LEGACY_BLOB_LEN);
        assert_eq!(bytes[4], LEGACY_VERSION);
        assert_eq!(SealedSeed::from_bytes(&bytes).unwrap(), legacy);
    }

    #[test]
    fn an_unknown_network_code_is_named() {
        let mut bytes = sample().to_bytes();
        bytes[5] = 9;
        let err = SealedSeed::from_bytes(&bytes).unwrap_err();
        assert!(err.contains("network code 9"), "{err}");
    }
}
