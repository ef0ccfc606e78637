//! `hoist login` / `hoist logout`: verify and store, or remove, a registry's credentials.
//!
//! Credentials go where Docker keeps them (`config.json`, or the credential helper it names), so
//! `docker login` and `hoist login` share them. They are verified against the registry before they
//! are stored, and never printed.

use std::io::{IsTerminal, Read};

use anyhow::{Context as _, bail};

use crate::cli::{LoginArgs, LogoutArgs};
use crate::commands::Context;
use hoist_registry::auth::credentials::{CredentialSource, Credentials};

/// `docker.io`, `index.docker.io`, `https://index.docker.io/v1/` -> `docker.io`; schemes and
/// paths dropped elsewhere.
pub fn normalise_registry(input: &str) -> String {
    let s = input.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        _ => host,
    }
}

/// The host that serves the registry API for a registry name.
pub fn api_host(registry: &str) -> String {
    if registry == "docker.io" {
        "registry-1.docker.io".into()
    } else {
        registry.into()
    }
}

pub async fn login(ctx: &Context, args: LoginArgs) -> anyhow::Result<()> {
    let registry = normalise_registry(&args.registry);
    if registry.is_empty() {
        bail!("no registry given");
    }
    let password = match (args.password_stdin, args.password) {
        (true, _) => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the password from standard input")?;
            s.trim_end_matches(['\n', '\r']).to_owned()
        }
        (false, Some(p)) => p,
        (false, None) => {
            if std::io::stdin().is_terminal() {
                bail!("give the password with --password-stdin (or --password)");
            }
            bail!("no password: use --password-stdin");
        }
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    let creds = Credentials::basic(&args.username, &password);
    let host = api_host(&registry);
    let client = ctx.client_with(|b| b.credentials(host.clone(), creds.clone()))?;
    let identity = client
        .login(&host)
        .await
        .with_context(|| format!("login to {registry} failed"))?;
    let to_store = match identity {
        Some(token) => Credentials::identity_token(Some(args.username.clone()), token),
        None => creds,
    };
    CredentialSource::from_env()
        .store(&registry, &to_store)
        .with_context(|| format!("cannot store the credentials for {registry}"))?;
    if !ctx.quiet {
        eprintln!("Login succeeded: {registry}");
    }
    Ok(())
}

pub async fn logout(ctx: &Context, args: LogoutArgs) -> anyhow::Result<()> {
    let registry = normalise_registry(&args.registry);
    let removed = CredentialSource::from_env()
        .erase(&registry)
        .with_context(|| format!("cannot remove the credentials for {registry}"))?;
    if !ctx.quiet {
        if removed {
            eprintln!("Removed login credentials for {registry}");
        } else {
            eprintln!("Not logged in to {registry}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_normalise_like_docker() {
        for (input, want) in [
            ("docker.io", "docker.io"),
            ("https://index.docker.io/v1/", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("127.0.0.1:5000", "127.0.0.1:5000"),
            ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
            ("Registry.Example.com", "registry.example.com"),
        ] {
            assert_eq!(normalise_registry(input), want, "{input}");
        }
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("r:5000"), "r:5000");
    }
}
