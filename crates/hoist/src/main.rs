//! `hoist`: pull, push and copy container images between registries and a local store.
//!
//! The binary is thin: argument parsing, configuration, output. The work is done by the library
//! crates (`hoist-registry`, `hoist-distribution`, `hoist-store`, `hoist-xfer`).

mod cli;
mod commands;
mod config;
mod exit;
mod output;
mod progress;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    output::init_logging(args.global.verbose, args.global.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hoist: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(exit::FAILURE);
        }
    };
    let result = runtime.block_on(commands::run(args));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hoist: {}", output::error_chain(&err));
            std::process::ExitCode::from(exit::code_for(&err))
        }
    }
}
