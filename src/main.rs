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
    // A plain level, not an EnvFilter: its directive parser compiles
    // regexes at start-up, which is time on the boot path for no use here.
    let level = if cli.verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        // journald and the serial console take plain text.
        .with_ansi(false)
        .without_time()
        .init();
    // Libraries that log through `log` (tss-esapi says "Closing context."
    // at each TPM use): only their warnings and errors reach the journal.
    log::set_max_level(log::LevelFilter::Warn);
    match run(cli) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("ephemera: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
