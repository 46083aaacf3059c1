use std::process::ExitCode;

fn main() -> ExitCode {
    crmsync_cli::Cli::new().run()
}
