//! `azure-identity-rs <scope>`: asks the real `azure_identity` crate's
//! `ManagedIdentityCredential` for a token and prints one JSON line
//! `{"token": "...", "expires_on": <epoch s>}`; on failure prints the crate's error message on
//! stderr and exits 1 (2 for a usage error).
//!
//! The crate picks its source from the usual environment (`IDENTITY_ENDPOINT` +
//! `IDENTITY_HEADER`: App Service; `IDENTITY_ENDPOINT` + `IMDS_ENDPOINT`: Azure Arc; otherwise
//! IMDS at the fixed 169.254.169.254). Options, for the conformance tests:
//!
//! - `--client-id ID` (or `AZURE_CLIENT_ID`), `--object-id ID`, `--resource-id ID`: a
//!   user-assigned identity;
//! - `--repeat N`: call `get_token` N times on one credential (a line per call), to observe the
//!   crate's own token cache.

use std::process::ExitCode;

use azure_core::credentials::TokenCredential;
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};

const USAGE: &str = "usage: azure-identity-rs <scope> [--client-id ID | --object-id ID | --resource-id ID] [--repeat N]";

struct Args {
    scope: String,
    id: Option<UserAssignedId>,
    repeat: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut scope = None;
    let mut id = std::env::var("AZURE_CLIENT_ID")
        .ok()
        .filter(|v| !v.is_empty())
        .map(UserAssignedId::ClientId);
    let mut repeat = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--client-id" => id = Some(UserAssignedId::ClientId(value()?)),
            "--object-id" => id = Some(UserAssignedId::ObjectId(value()?)),
            "--resource-id" => id = Some(UserAssignedId::ResourceId(value()?)),
            "--repeat" => repeat = value()?.parse().map_err(|e| format!("--repeat: {e}"))?,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            s if scope.is_none() => scope = Some(s.to_owned()),
            s => return Err(format!("unexpected argument {s}\n{USAGE}")),
        }
    }
    Ok(Args {
        scope: scope.ok_or_else(|| USAGE.to_owned())?,
        id,
        repeat,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let options = ManagedIdentityCredentialOptions {
        user_assigned_id: args.id,
        ..Default::default()
    };
    let credential = match ManagedIdentityCredential::new(Some(options)) {
        Ok(credential) => credential,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    for _ in 0..args.repeat {
        match credential.get_token(&[&args.scope], None).await {
            Ok(token) => {
                let line = serde_json::json!({
                    "token": token.token.secret(),
                    "expires_on": token.expires_on.unix_timestamp(),
                });
                println!("{line}");
            }
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
