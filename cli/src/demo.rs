//! `crmsync demo`: the whole story on the embedded fakes.
use std::process::ExitCode;

/// Options of `crmsync demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Print one JSON object instead of the readable report.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(_args: DemoArgs) -> anyhow::Result<ExitCode> {
    let f = crate::scenario::Fakes::start().await;
    let s = crate::scenario::seed(&f, crate::scenario::Size::default());
    println!("{:?}", s.exchange_rep.name);
    Ok(ExitCode::SUCCESS)
}
