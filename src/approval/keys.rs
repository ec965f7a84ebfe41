//! An admin's signing key, as `wardenctl admin keygen` writes it: 64 hex characters in a 0600
//! file. Production admins keep it on a hardware key or use a wallet address instead; this file
//! form is for the demo and for scripted approvers.

use lightning_signer::bitcoin::secp256k1::{Keypair, Message, PublicKey, Secp256k1, SecretKey};
use std::path::Path;
use zeroize::Zeroizing;

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing failed.
    #[error("{path}: {detail}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        detail: String,
    },
    /// The content is not a key.
    #[error("{path} does not hold an admin key (64 hex characters); create one with `wardenctl admin keygen --out FILE`")]
    Malformed {
        /// The file.
        path: String,
    },
}

/// An admin's secret key; never printed, zeroized on drop.
pub struct AdminKey {
    keypair: Keypair,
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminKey(public {})", self.public_key())
    }
}

impl Drop for AdminKey {
    fn drop(&mut self) {
        self.keypair.non_secure_erase();
    }
}

impl AdminKey {
    /// A new random key from the OS RNG.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        loop {
            getrandom::getrandom(bytes.as_mut_slice()).expect("the OS RNG is available");
            if let Ok(sk) = SecretKey::from_slice(bytes.as_slice()) {
                return AdminKey {
                    keypair: Keypair::from_secret_key(&Secp256k1::new(), &sk),
                };
            }
        }
    }

    /// From raw secret bytes (tests and HSM-less tooling).
    pub fn from_secret(sk: SecretKey) -> Self {
        AdminKey {
            keypair: Keypair::from_secret_key(&Secp256k1::new(), &sk),
        }
    }

    /// The public key that goes into the policy's `[admins]`.
    pub fn public_key(&self) -> PublicKey {
        self.keypair.public_key()
    }

    /// Write the key to `path` (0600, atomically, never over an existing file).
    pub fn save(&self, path: &Path) -> Result<(), KeyFileError> {
        // Every buffer holding the key (raw and hex) is wiped when dropped.
        let secret = Zeroizing::new(self.keypair.secret_bytes());
        let mut text = Zeroizing::new(vec![0u8; 65]);
        hex::encode_to_slice(secret.as_slice(), &mut text[..64])
            .expect("32 bytes are 64 hex characters");
        text[64] = b'\n';
        crate::fsutil::write_atomic(path, &text, false).map_err(|e| KeyFileError::Io {
            path: path.display().to_string(),
            detail: if e.kind() == std::io::ErrorKind::AlreadyExists {
                "the file exists; refusing to overwrite an admin key".into()
            } else {
                e.to_string()
            },
        })
    }

    /// Read a key file.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| KeyFileError::Io {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?);
        let malformed = || KeyFileError::Malformed {
            path: path.display().to_string(),
        };
        let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| malformed())?);
        let sk = SecretKey::from_slice(&bytes).map_err(|_| malformed())?;
        Ok(Self::from_secret(sk))
    }

    /// This admin's BIP-340 approval of `decision` on the request `fields` describes (the
    /// client's [`warden_client::approval::sign_bip340`], with the key from this file).
    pub fn sign_approval(
        &self,
        fields: &warden_client::approval::ApprovalFields,
        decision: warden_client::approval::Decision,
    ) -> [u8; 64] {
        warden_client::approval::sign_bip340(&self.keypair, fields, decision)
    }

    /// A BIP-340 signature over a 32-byte digest.
    pub fn sign_digest(&self, digest: [u8; 32]) -> [u8; 64] {
        let secp = Secp256k1::new();
        secp.sign_schnorr(&Message::from_digest(digest), &self.keypair)
            .serialize()
    }
}
