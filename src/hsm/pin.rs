//! Where the token PIN comes from. Never a command-line argument: those show up in `ps`
//! and shell history. A file (readable only by Warden's user) or an environment variable.

use super::HsmError;
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use zeroize::Zeroizing;

/// How Warden obtains the user PIN of its token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PinSource {
    /// Read the PIN from a file; a single trailing newline is ignored.
    File(PathBuf),
    /// Read the PIN from the named environment variable.
    Env(String),
}

impl PinSource {
    /// A description that names where the PIN comes from and never the PIN itself.
    pub fn describe(&self) -> String {
        match self {
            PinSource::File(p) => format!("PIN file {}", p.display()),
            PinSource::Env(v) => format!("environment variable {v}"),
        }
    }

    /// Read the PIN. The intermediate buffers are zeroized; the result is a `SecretString`
    /// that zeroizes itself on drop and redacts itself in `Debug`.
    pub fn read(&self) -> Result<AuthPin, HsmError> {
        let unavailable = |detail: String| HsmError::PinUnavailable {
            source_desc: self.describe(),
            detail,
        };
        let raw: Zeroizing<String> = match self {
            PinSource::File(path) => {
                warn_if_shared(path);
                Zeroizing::new(
                    std::fs::read_to_string(path).map_err(|e| unavailable(e.to_string()))?,
                )
            }
            PinSource::Env(var) => Zeroizing::new(
                std::env::var(var).map_err(|_| unavailable("the variable is not set".into()))?,
            ),
        };
        let trimmed = raw.strip_suffix('\n').unwrap_or(&raw);
        let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
        if trimmed.is_empty() {
            return Err(unavailable("the PIN is empty".into()));
        }
        Ok(AuthPin::from(trimmed))
    }
}

#[cfg(unix)]
fn warn_if_shared(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                pin_file = %path.display(),
                "the PIN file is readable by group or others; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &std::path::Path) {}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn file_pin_drops_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pin");
        std::fs::write(&p, "12 34\n").unwrap();
        let pin = PinSource::File(p).read().unwrap();
        assert_eq!(pin.expose_secret(), "12 34");
    }

    #[test]
    fn empty_pin_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pin");
        std::fs::write(&p, "\n").unwrap();
        let err = PinSource::File(p.clone()).read().unwrap_err().to_string();
        assert!(err.contains(&p.display().to_string()), "{err}");
        assert!(err.contains("the PIN is empty"), "{err}");
    }

    #[test]
    fn unset_env_pin_is_an_error_naming_the_variable() {
        let err = PinSource::Env("WARDEN_TEST_SURELY_UNSET_PIN".into())
            .read()
            .unwrap_err()
            .to_string();
        assert!(err.contains("WARDEN_TEST_SURELY_UNSET_PIN"), "{err}");
        assert!(err.contains("not set"), "{err}");
    }
}
