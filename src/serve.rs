//! `mesh serve`: load the model, start the engine, the OpenAI API and the management API.
pub async fn run(_args: crate::cli::ServeArgs) -> anyhow::Result<()> { anyhow::bail!("not yet") }
