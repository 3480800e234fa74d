//! Command line: `tovlog [serve] [--listen ADDR] [--data-dir DIR] [--config FILE]`,
//! `tovlog check-config`, `tovlog verify` and `tovlog chain-head`.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};

use crate::config::Config;

/// tovlog: a log database that speaks Grafana Loki's API (push, LogQL, labels).
#[derive(Debug, Parser)]
#[command(name = "tovlog", version, about, long_about = None)]
pub struct Cli {
    /// What to do; serving is the default.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `serve`, accepted without the subcommand too.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Load and validate the configuration, print it as YAML with every default filled in, exit.
    CheckConfig(ServeArgs),
    /// Print the argon2id hash of a bearer token or password for `auth.credentials`
    /// (`token_hash`, `password_hash`). The secret is read from standard input (one line)
    /// unless given as the argument; prefer stdin, which keeps it out of the shell history.
    HashSecret {
        /// The secret; `-` or nothing reads it from standard input.
        secret: Option<String>,
    },
    /// Check the tamper-evident storage (reads the store only; run it with the server
    /// stopped or running): every tenant's hash chain, its head, and every listed file's
    /// SHA-256. Exits 1 at the first break, 0 with a summary when clean.
    Verify(VerifyArgs),
    /// Print each tenant's hash chain head as TENANT=HASH, to keep elsewhere and pass to
    /// `verify --expect-head` later.
    ChainHead(ServeArgs),
}

/// Options of `verify`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct VerifyArgs {
    /// The store to check: the same options as `serve`.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// A head recorded earlier (`tovlog chain-head`), TENANT=HASH; it must be in the tenant's
    /// chain up to the current head, proving the history was not rewritten since. Repeatable.
    #[arg(long, value_name = "TENANT=HASH")]
    pub expect_head: Vec<String>,
    /// Files hashed at once [default: the number of CPUs].
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub concurrency: usize,
}

/// Options shared by `serve` and `check-config`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Address to serve the HTTP API on [default: 127.0.0.1:3100, or `listen` from the config file].
    #[arg(long, value_name = "ADDR", env = "TOVLOG_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the WAL, indexes and (with the default local object store) chunk files
    /// [default: ./data, or `storage.data_dir` from the config file].
    #[arg(long, value_name = "DIR", env = "TOVLOG_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// YAML configuration file; every key is documented in docs/configuration.md. Flags override it.
    #[arg(long, short = 'c', value_name = "FILE", env = "TOVLOG_CONFIG")]
    pub config: Option<PathBuf>,
    /// Run as a read replica of the bucket (`storage.role: reader`): answer queries over what
    /// the writer flushed, never write.
    #[arg(long)]
    pub read_only: bool,
}

impl ServeArgs {
    /// Merge with `other` (subcommand args win over top-level ones).
    pub fn or(self, other: ServeArgs) -> ServeArgs {
        ServeArgs {
            listen: self.listen.or(other.listen),
            data_dir: self.data_dir.or(other.data_dir),
            config: self.config.or(other.config),
            read_only: self.read_only || other.read_only,
        }
    }

    /// The effective configuration: defaults, then the file, then flags.
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(dir) = &self.data_dir {
            config.storage.data_dir = dir.clone();
        }
        if self.read_only {
            config.storage.role = tovlog_storage::replica::Role::Reader;
        }
        config.validate()?;
        Ok(config)
    }
}

/// The `tovlog` command: parse the command line and run what it names (the binary's whole
/// `main`, kept here so its async code is compiled once, with this crate, rather than again
/// with the binary).
#[tokio::main]
pub async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Verify(a)) => {
            let code = crate::verify::run_verify(a, cli.serve.clone()).await?;
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
            let hash = crate::server::auth::hash_secret(&secret)?;
            std::io::Write::write_all(&mut std::io::stdout(), format!("{hash}\n").as_bytes())?;
            return Ok(());
        }
        Some(Command::ChainHead(a)) => {
            let code = crate::verify::run_chain_head(a.clone().or(cli.serve.clone())).await?;
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
    crate::telemetry::init(&config.log);
    let server = crate::server::start(config, crate::server::shutdown_signal()).await?;
    server.wait().await
}
