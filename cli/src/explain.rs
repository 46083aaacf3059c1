//! `crmsync explain`: why a rep's contact or event is (not) in sync, from the store and one
//! read of each side.

use std::process::ExitCode;

use anyhow::Context;
use crmsync_core::engine::explain::Query;

use crate::commands::ConfigArg;

/// Options of `crmsync explain`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["email", "id", "subject"])))]
pub struct ExplainArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The rep (partial, case-insensitive name).
    #[arg(long, value_name = "NAME")]
    pub rep: String,
    /// A contact's e-mail address.
    #[arg(long, value_name = "ADDRESS")]
    pub email: Option<String>,
    /// A record's id on either side (or a link's sync key).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// (Part of) an event's subject.
    #[arg(long, value_name = "TEXT")]
    pub subject: Option<String>,
    /// Print JSON ({"answers": [...]}) instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let loaded = args.config.load()?;
    let rep = loaded.select(Some(&args.rep))?.remove(0);
    let query = match (args.email, args.id, args.subject) {
        (Some(e), _, _) => Query::Email(e),
        (_, Some(i), _) => Query::Id(i),
        (_, _, Some(s)) => Query::Subject(s),
        _ => anyhow::bail!("give --email, --id or --subject"),
    };
    let wired = loaded.wire(std::slice::from_ref(&rep)).await?;
    let answers = wired.engine.explain(&rep, &query).await.with_context(|| format!("explaining for {}", rep.name))?;
    if args.json {
        let out = serde_json::json!({ "rep": rep.name, "query": query, "answers": answers });
        println!("{}", serde_json::to_string(&out)?);
    } else {
        for a in &answers {
            println!("{a}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
