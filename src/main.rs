//! The `tovlog` binary: parse the command line, load the configuration, serve.

use clap::Parser;
use tovlog::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    // Before any thread exists (see the function's doc).
    tovlog_storage::tune_allocator();
    run()
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Verify(a)) => {
            let code = tovlog::verify::run_verify(a, cli.serve.clone()).await?;
            std::process::exit(code);
        }
        Some(Command::HashSecret { secret }) => {
            let secret = match secret.as_deref() {
                None | Some("-") => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
                Some(s) => s.to_string(),
            };
            if secret.is_empty() {
                anyhow::bail!("hash-secret: the secret is empty");
            }
            let hash = tovlog::server::auth::hash_secret(&secret)?;
            std::io::Write::write_all(&mut std::io::stdout(), format!("{hash}\n").as_bytes())?;
            return Ok(());
        }
        Some(Command::ChainHead(a)) => {
            let code = tovlog::verify::run_chain_head(a.clone().or(cli.serve.clone())).await?;
            std::process::exit(code);
        }
        _ => {}
    }
    let (check_only, args) = match cli.command {
        Some(Command::Serve(a)) => (false, a.or(cli.serve)),
        Some(Command::CheckConfig(a)) => (true, a.or(cli.serve)),
        Some(Command::Verify(_))
        | Some(Command::ChainHead(_))
        | Some(Command::HashSecret { .. })
        | None => (false, cli.serve),
    };
    let config = args.load()?;
    if check_only {
        std::io::Write::write_all(&mut std::io::stdout(), config.to_masked_yaml()?.as_bytes())?;
        return Ok(());
    }
    tovlog::telemetry::init(&config.log);
    let server = tovlog::server::start(config, tovlog::server::shutdown_signal()).await?;
    server.wait().await
}
