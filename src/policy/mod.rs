//! The policy language (the `warden-policy` crate, re-exported whole) and what wardend adds to
//! it: reading a policy file from disk.

pub use warden_policy::*;

use lightning_signer::bitcoin::Network;
use std::path::{Path, PathBuf};

/// Why a policy file could not be loaded. `Display` prints one `FILE:LINE:COL: message` line
/// per problem, the format editors and CI annotate.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    /// The file could not be read.
    #[error("{}: cannot read the policy file: {detail}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        detail: String,
    },
    /// The file has problems; all of them are listed.
    #[error("{}", render(.path, .errors))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem, in file order.
        errors: Vec<PolicyError>,
    },
}

fn render(path: &Path, errors: &[PolicyError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}:{}:{}: {}", path.display(), e.line, e.col, e.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Read and validate a policy file.
pub fn load_policy_file(path: &Path) -> Result<Policy, PolicyLoadError> {
    load_policy_file_for(path, Network::Bitcoin)
}

/// [`load_policy_file`] for a node on `network`: on-chain addresses must be of that network.
pub fn load_policy_file_for(path: &Path, network: Network) -> Result<Policy, PolicyLoadError> {
    let bytes = std::fs::read(path).map_err(|e| PolicyLoadError::Read {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| PolicyLoadError::Invalid {
        path: path.to_path_buf(),
        errors: vec![PolicyError {
            line: 1,
            col: 1,
            message: format!(
                "the file is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        }],
    })?;
    parse_policy_for(&text, network).map_err(|errors| PolicyLoadError::Invalid {
        path: path.to_path_buf(),
        errors,
    })
}
