//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use hoist_distribution::recompress::LayerCompression;

/// Fast, safe container image distribution: pull, push and copy OCI and Docker images.
#[derive(Debug, Parser)]
#[command(name = "hoist", version, about, long_about = None)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The local store's directory [default: $XDG_DATA_HOME/hoist, else ~/.local/share/hoist]
    #[arg(long, global = true, env = "HOIST_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// A TOML configuration file (insecure registries, extra CAs, client certificates)
    #[arg(long, global = true, env = "HOIST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Machine-readable output: one JSON object per line
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors and final results
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More logging (-v: debug, -vv: trace); credentials are never logged
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pull an image from a registry into the local store, its layers unpacked and ready
    #[command(
        after_help = "Examples:\n  hoist pull 127.0.0.1:5000/app:v1\n  hoist pull --platform linux/arm64 alpine:3.20\n  \
hoist pull --all-tags 127.0.0.1:5000/app\n  hoist pull --no-unpack --json 127.0.0.1:5000/app@sha256:…"
    )]
    Pull(PullArgs),
    /// Push an image from the local store to its registry
    #[command(
        after_help = "Examples:\n  hoist push 127.0.0.1:5000/app:v1\n  hoist tag 127.0.0.1:5000/app:v1 127.0.0.1:6000/app:v1 && hoist push 127.0.0.1:6000/app:v1"
    )]
    Push(PushArgs),
    /// List the tags of a repository
    #[command(
        after_help = "Examples:\n  hoist tags 127.0.0.1:5000/library/alpine\n  hoist tags --json docker.io/library/busybox"
    )]
    Tags(TagsArgs),
    /// Show an image's manifest, configuration and platforms
    #[command(
        after_help = "Examples:\n  hoist inspect 127.0.0.1:5000/demo:latest\n  hoist inspect --raw alpine:3.20\n  hoist inspect --raw --image-config alpine:3.20\n  hoist inspect --json alpine@sha256:…"
    )]
    Inspect(InspectArgs),
    /// Log in to a registry (stores credentials in Docker's config.json or its credential helper)
    #[command(
        after_help = "Examples:\n  hoist login 127.0.0.1:5000 -u tester --password-stdin < pw.txt\n  hoist login registry.example.com -u me"
    )]
    Login(LoginArgs),
    /// Log out of a registry (removes its stored credentials)
    #[command(after_help = "Example:\n  hoist logout 127.0.0.1:5000")]
    Logout(LogoutArgs),
    /// Copy an image between registries, OCI layouts, archives and the local store
    #[command(
        after_help = "Transports: docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF],\n\
store:REF (or a bare reference: the local store).\n\n\
Examples:\n  hoist copy docker://127.0.0.1:5000/app:v1 oci:/tmp/app:v1\n  \
hoist copy --all-platforms docker://src.example/app:v1 docker://dst.example/app:v1\n  \
hoist copy oci:/tmp/app:v1 docker-archive:/tmp/app.tar:app:v1"
    )]
    Copy(CopyArgs),
    /// Write an image's flattened file tree into a directory (DIR is created, or must be empty)
    #[command(
        after_help = "Examples:\n  hoist unpack 127.0.0.1:5000/app:v1 /tmp/rootfs\n  hoist unpack --platform linux/arm64 alpine:3.20 /tmp/alpine-arm64"
    )]
    Unpack(UnpackArgs),
    /// List the images in the local store
    #[command(after_help = "Examples:\n  hoist images\n  hoist images --json")]
    Images,
    /// Give an image in the local store another name
    #[command(
        after_help = "Example:\n  hoist tag 127.0.0.1:5000/app:v1 registry.example.com/team/app:v1"
    )]
    Tag(TagArgs),
    /// Remove names from the local store (their content goes at the next gc)
    #[command(after_help = "Examples:\n  hoist rm 127.0.0.1:5000/app:v1\n  hoist rm --gc alpine")]
    Rm(RmArgs),
    /// Check the local store: re-hash every blob, verify every layer, resolve every name
    #[command(after_help = "Examples:\n  hoist fsck\n  hoist fsck --repair")]
    Fsck(FsckArgs),
    /// Remove what no name and no running operation uses from the local store
    #[command(after_help = "Examples:\n  hoist gc\n  hoist gc --dry-run")]
    Gc(GcArgs),
}

/// `hoist pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image (`registry/name:tag`, `…@sha256:…`; `alpine` means docker.io/library/alpine:latest)
    pub reference: String,
    /// The platform to pull from a multi-platform image (os/arch[/variant]) [default: this machine]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Pull every tag of the repository
    #[arg(short = 'a', long)]
    pub all_tags: bool,
    /// Only fetch and verify the blobs; layers are unpacked on first use
    #[arg(long)]
    pub no_unpack: bool,
    /// Fetch whole blobs even for zstd:chunked and eStargz layers (by default only the chunks
    /// whose files the store lacks are fetched; config: transfers.partial_pulls)
    #[arg(long)]
    pub no_partial: bool,
    /// Fetch non-distributable (foreign) layers from their descriptor URLs on this host
    /// (`host` or `host:port`; repeatable; `*` for any), without credentials, before the
    /// registry; https only, except to loopback (config: transfers.allow_foreign_urls)
    #[arg(long = "allow-foreign-urls", value_name = "HOST")]
    pub allow_foreign_urls: Vec<String>,
}

/// `hoist push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image in the local store (its name says where it goes)
    pub reference: String,
    /// The platform to push when the name holds a multi-platform image [default: this machine]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Upload non-distributable ("foreign") layers too; by default they are left out and the
    /// manifest keeps pointing to their URLs
    #[arg(long)]
    pub push_foreign_layers: bool,
}

/// `hoist copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Where the image comes from
    pub source: String,
    /// Where it goes
    pub destination: String,
    /// Copy every platform of a multi-platform image, and the index itself (digests preserved)
    #[arg(long, conflicts_with = "platform")]
    pub all_platforms: bool,
    /// The platform to copy from a multi-platform image (os/arch[/variant]) [default: this machine]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Blobs copied at once
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub concurrency: usize,
    /// Recompress the layers on the way: gzip, zstd, zstd:chunked or estargz. The manifest is
    /// rewritten, so the copy gets a new digest; the config and DiffIDs stay the same, except with
    /// estargz, which rewrites the layers' tars and so writes a new config naming their DiffIDs
    #[arg(long, value_name = "FORMAT", value_parser = parse_compression)]
    pub compress: Option<LayerCompression>,
    /// The compression level for --compress (gzip 0-9, zstd 1-22) [default: the format's]
    #[arg(
        long,
        value_name = "LEVEL",
        requires = "compress",
        allow_negative_numbers = true
    )]
    pub compress_level: Option<i32>,
}

fn parse_compression(s: &str) -> Result<LayerCompression, String> {
    LayerCompression::parse(s)
}

/// `hoist unpack`.
#[derive(Debug, Args)]
pub struct UnpackArgs {
    /// The image in the local store
    pub reference: String,
    /// The directory to write
    pub dir: PathBuf,
    /// The platform, when the name holds a multi-platform image [default: this machine]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
}

/// `hoist tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// An image in the store
    pub source: String,
    /// The new name
    pub target: String,
}

/// `hoist rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Names to remove
    #[arg(required = true)]
    pub references: Vec<String>,
    /// Run gc afterwards to free the space
    #[arg(long)]
    pub gc: bool,
}

/// `hoist fsck`.
#[derive(Debug, Args)]
pub struct FsckArgs {
    /// Remove what is corrupt, so that the next pull fetches it again
    #[arg(long)]
    pub repair: bool,
}

/// `hoist gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Show what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// `hoist tags`.
#[derive(Debug, Args)]
pub struct TagsArgs {
    /// The repository (`registry/name`; `alpine` means docker.io/library/alpine)
    pub repository: String,
    /// Tags asked for per page
    #[arg(long, value_name = "N")]
    pub page_size: Option<u32>,
}

/// `hoist inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The image reference (`registry/name:tag` or `…@sha256:…`)
    pub reference: String,
    /// Print the manifest exactly as the registry sent it
    #[arg(long)]
    pub raw: bool,
    /// Print the raw image configuration instead of the manifest (with --raw)
    #[arg(long, requires = "raw")]
    pub image_config: bool,
}

/// `hoist login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry host (`host[:port]`; `docker.io` for Docker Hub)
    pub registry: String,
    /// User name
    #[arg(short, long)]
    pub username: String,
    /// Read the password from standard input (recommended)
    #[arg(long, conflicts_with = "password")]
    pub password_stdin: bool,
    /// The password (visible in the process list: prefer --password-stdin)
    #[arg(short, long, env = "HOIST_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

/// `hoist logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry host
    pub registry: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
