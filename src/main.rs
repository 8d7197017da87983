use std::process::ExitCode;

use clap::Parser;
use ephemera::cli::{run, Cli};
use ephemera::error::{EXIT_OK, EXIT_USAGE};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    let level = if cli.verbose { "debug" } else { "info" };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_target(false)
        // journald and the serial console take plain text.
        .with_ansi(false)
        .without_time()
        .init();
    match run(cli) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("ephemera: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
