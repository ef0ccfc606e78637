//! `hoist tags REPO`: every tag of a repository.

use crate::cli::TagsArgs;
use crate::commands::{Context, parse_reference};
use crate::output::json_line;

pub async fn run(ctx: &Context, args: TagsArgs) -> anyhow::Result<()> {
    let reference = parse_reference(&args.repository)?;
    let client = ctx.client()?;
    let repo = ctx.repository(&client, &reference).await?;
    let tags = repo.tags(args.page_size).await?;
    if ctx.json {
        json_line(&serde_json::json!({
            "repository": format!("{}/{}", reference.registry(), reference.repository()),
            "tags": tags,
        }))?;
    } else {
        for t in tags {
            println!("{t}");
        }
    }
    Ok(())
}
