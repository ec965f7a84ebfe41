//! Turning what PKCS#11 hands back into `secp256k1` types.
//!
//! CKM_ECDSA returns the raw `r || s` concatenation, and either half of the curve's
//! signatures is valid to the HSM. Bitcoin consensus (BIP 62/146) and `secp256k1`'s verifier
//! accept only low-S, so every signature is normalized before it leaves this module.
//! CKA_EC_POINT is specified as a DER OCTET STRING wrapping the point, but some modules return
//! the bare point: both are accepted.

use super::HsmError;
use lightning_signer::bitcoin::secp256k1::{ecdsa::Signature, PublicKey};

/// DER encoding of the secp256k1 curve OID 1.3.132.0.10, as CKA_EC_PARAMS expects it.
pub const SECP256K1_EC_PARAMS: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];

/// Convert a raw `r || s` signature to a low-S `Signature`.
pub fn signature_from_raw(raw: &[u8]) -> Result<Signature, HsmError> {
    if raw.len() != 64 {
        return Err(HsmError::BadHsmOutput {
            what: "ECDSA signature",
            detail: format!("expected 64 bytes of r||s, got {}", raw.len()),
        });
    }
    let mut sig = Signature::from_compact(raw).map_err(|e| HsmError::BadHsmOutput {
        what: "ECDSA signature",
        detail: e.to_string(),
    })?;
    sig.normalize_s();
    Ok(sig)
}

/// Parse CKA_EC_POINT into a public key, with or without its DER OCTET STRING wrapper.
pub fn public_key_from_ec_point(ec_point: &[u8]) -> Result<PublicKey, HsmError> {
    let point = match ec_point {
        // OCTET STRING, short-form length covering the rest.
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() && *len < 0x80 => rest,
        bare => bare,
    };
    PublicKey::from_slice(point).map_err(|e| HsmError::BadHsmOutput {
        what: "EC public key (CKA_EC_POINT)",
        detail: format!("{e} ({} bytes)", ec_point.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightning_signer::bitcoin::secp256k1::{Message, Secp256k1, SecretKey};

    fn keypair() -> (SecretKey, PublicKey) {
        let secp = Secp256k1::new();
        let sk = SecretKey::from_slice(&[7u8; 32]).unwrap();
        (sk, PublicKey::from_secret_key(&secp, &sk))
    }

    #[test]
    fn high_s_raw_signature_is_normalized_and_verifies() {
        let secp = Secp256k1::new();
        let (sk, pk) = keypair();
        let msg = Message::from_digest([42u8; 32]);
        let low = secp.sign_ecdsa(&msg, &sk);
        let compact = low.serialize_compact();
        // Build the high-S twin: s' = n - s.
        let n = hex::decode("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141")
            .unwrap();
        let mut high = compact;
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let d = i16::from(n[i]) - i16::from(compact[32 + i]) - borrow;
            borrow = i16::from(d < 0);
            high[32 + i] = (d + if d < 0 { 256 } else { 0 }) as u8;
        }
        assert_ne!(high, compact);
        let high_sig = Signature::from_compact(&high).unwrap();
        assert!(
            secp.verify_ecdsa(&msg, &high_sig, &pk).is_err(),
            "secp256k1 must reject the high-S form"
        );
        let normalized = signature_from_raw(&high).unwrap();
        secp.verify_ecdsa(&msg, &normalized, &pk).unwrap();
        assert_eq!(normalized, low);
    }

    #[test]
    fn wrong_length_signature_names_the_length() {
        let err = signature_from_raw(&[1u8; 70]).unwrap_err().to_string();
        assert!(err.contains("expected 64 bytes of r||s, got 70"), "{err}");
    }

    #[test]
    fn ec_point_is_accepted_wrapped_and_bare() {
        let (_, pk) = keypair();
        let bare = pk.serialize_uncompressed();
        let mut wrapped = vec![0x04, 65];
        wrapped.extend_from_slice(&bare);
        assert_eq!(public_key_from_ec_point(&wrapped).unwrap(), pk);
        assert_eq!(public_key_from_ec_point(&bare).unwrap(), pk);
    }

    #[test]
    fn garbage_ec_point_is_an_error() {
        let err = public_key_from_ec_point(&[0x04, 3, 1, 2, 3])
            .unwrap_err()
            .to_string();
        assert!(err.contains("CKA_EC_POINT"), "{err}");
    }
}
