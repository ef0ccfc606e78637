//! The commands, one module each, and what they share: the configuration and the registry client.

mod inspect;
mod login;
mod tags;

use anyhow::Context as _;

use crate::cli::{Cli, Command, Global};
use crate::config::Config;
use hoist_registry::auth::credentials::CredentialSource;
use hoist_registry::{ImageRef, RegistryClient, Repository};

/// Runs the command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Context::new(&cli.global)?;
    match cli.command {
        Command::Tags(args) => tags::run(&ctx, args).await,
        Command::Inspect(args) => inspect::run(&ctx, args).await,
        Command::Login(args) => login::login(&ctx, args).await,
        Command::Logout(args) => login::logout(&ctx, args).await,
    }
}

/// What every command may need.
pub struct Context {
    /// The configuration file's content (defaults when none was given).
    pub config: Config,
    /// Global flags.
    pub json: bool,
    /// Quiet output.
    pub quiet: bool,
}

impl Context {
    fn new(global: &Global) -> anyhow::Result<Context> {
        let config = match &global.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        Ok(Context {
            config,
            json: global.json,
            quiet: global.quiet,
        })
    }

    /// A registry client configured from the config file, with Docker's and podman's credentials.
    pub fn client(&self) -> anyhow::Result<RegistryClient> {
        self.client_with(|b| b)
    }

    /// A registry client, with a last adjustment to its builder (explicit credentials for login).
    pub fn client_with(
        &self,
        adjust: impl FnOnce(hoist_registry::ClientBuilder) -> hoist_registry::ClientBuilder,
    ) -> anyhow::Result<RegistryClient> {
        let mut b = RegistryClient::builder().credential_source(CredentialSource::from_env());
        for (host, cfg) in self.config.host_configs() {
            b = b.host(host, cfg);
        }
        Ok(adjust(b).build()?)
    }

    /// A handle on the repository of `reference`, with its endpoint resolved.
    pub async fn repository(
        &self,
        client: &RegistryClient,
        reference: &ImageRef,
    ) -> anyhow::Result<Repository> {
        let host = reference.api_host();
        let endpoint = client
            .resolve(host)
            .await
            .with_context(|| format!("cannot reach registry {host}"))?;
        Ok(client.repository(endpoint, reference.repository()))
    }
}

/// Parses a reference given on the command line.
pub fn parse_reference(s: &str) -> anyhow::Result<ImageRef> {
    Ok(ImageRef::parse(s)?)
}
