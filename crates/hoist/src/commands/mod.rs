//! The commands, one module each, and what they share: the configuration and the registry client.

mod copy;
mod inspect;
mod local;
mod login;
mod pull;
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
        Command::Pull(args) => pull::pull(&ctx, args).await,
        Command::Push(args) => pull::push(&ctx, args).await,
        Command::Tags(args) => tags::run(&ctx, args).await,
        Command::Inspect(args) => inspect::run(&ctx, args).await,
        Command::Login(args) => login::login(&ctx, args).await,
        Command::Logout(args) => login::logout(&ctx, args).await,
        Command::Copy(args) => copy::run(&ctx, args).await,
        Command::Unpack(args) => local::unpack(&ctx, args).await,
        Command::Images => local::images(&ctx).await,
        Command::Tag(args) => local::tag(&ctx, args).await,
        Command::Rm(args) => local::rm(&ctx, args).await,
        Command::Fsck(args) => local::fsck(&ctx, args).await,
        Command::Gc(args) => local::gc(&ctx, args).await,
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
    /// The store's directory.
    pub root: std::path::PathBuf,
}

impl Context {
    fn new(global: &Global) -> anyhow::Result<Context> {
        let config = match &global.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let root = match &global.root {
            Some(r) => r.clone(),
            None => default_root()?,
        };
        Ok(Context {
            config,
            json: global.json,
            quiet: global.quiet,
            root,
        })
    }

    /// The local store (opened, or created if missing).
    pub fn store(&self) -> anyhow::Result<hoist_store::Store> {
        local::open_store(&self.root)
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

/// `$XDG_DATA_HOME/hoist`, else `$HOME/.local/share/hoist`.
fn default_root() -> anyhow::Result<std::path::PathBuf> {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(std::path::PathBuf::from(d).join("hoist"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither XDG_DATA_HOME nor HOME is set: give --root")?;
    Ok(std::path::PathBuf::from(home).join(".local/share/hoist"))
}

/// Parses a reference given on the command line.
pub fn parse_reference(s: &str) -> anyhow::Result<ImageRef> {
    Ok(ImageRef::parse(s)?)
}
