//! `TestServer`: a real tovlog server on 127.0.0.1:0 with a temporary data directory.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tovlog::{server::RunningServer, Config};

/// A running server plus the directory it owns.
pub struct TestServer {
    server: Option<RunningServer>,
    pub url: String,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// The config the Loki oracle was recorded with (tests/conformance/tovlog.yaml).
pub fn conformance_config() -> anyhow::Result<Config> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/tovlog.yaml");
    Ok(Config::from_file(&path)?)
}

impl TestServer {
    /// Start with `config` on a fresh temporary directory.
    pub async fn start(config: Config) -> anyhow::Result<TestServer> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().to_path_buf();
        let mut s = Self::start_in(config, &path).await?;
        s._dir = Some(dir);
        Ok(s)
    }

    /// Start with `config` on an existing directory (restart tests).
    pub async fn start_in(mut config: Config, data_dir: &Path) -> anyhow::Result<TestServer> {
        config.storage.data_dir = data_dir.to_path_buf();
        config.listen = "127.0.0.1:0".parse()?;
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let server = tovlog::server::start_on(config, listener, std::future::pending()).await?;
        Ok(TestServer {
            url: server.url(),
            server: Some(server),
            client: reqwest::Client::new(),
            data_dir: data_dir.to_path_buf(),
            _dir: None,
        })
    }

    /// Graceful shutdown (flushes the head); keeps the directory alive if owned.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(s) = self.server.take() {
            s.shutdown().await?;
        }
        Ok(())
    }

    /// Take ownership of the temp dir so it outlives a stop/restart.
    pub fn take_dir(&mut self) -> Option<tempfile::TempDir> {
        self._dir.take()
    }

    /// GET `path` with query parameters and headers; returns status and body text.
    pub async fn get(
        &self,
        path: &str,
        params: &[(String, String)],
        headers: &[(String, String)],
    ) -> anyhow::Result<(u16, String)> {
        let mut req = self
            .client
            .get(format!("{}{}", self.url, path))
            .query(params);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await?))
    }

    /// POST a body to `path` with headers.
    pub async fn post(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, String)> {
        let mut req = self.client.post(format!("{}{}", self.url, path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await?))
    }

    /// Push every `push-*.json` of the conformance dataset.
    pub async fn push_dataset(&self) -> anyhow::Result<()> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/dataset");
        let mut files: Vec<_> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "json"))
        {
            let (status, body) = self
                .post(
                    "/loki/api/v1/push",
                    std::fs::read(f)?,
                    &[("content-type", "application/json")],
                )
                .await?;
            anyhow::ensure!(
                status == 204,
                "push of {} failed: {status} {body}",
                f.display()
            );
        }
        Ok(())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            // Best effort: a test that forgot to stop still releases the port and flushes.
            drop(s);
        }
    }
}

/// Start the release binary as a child process on `port` with `config` and `data`.
pub fn spawn(config: &Path, data: &Path, port: u16) -> anyhow::Result<Child> {
    Ok(Command::new(env!("CARGO_BIN_EXE_tovlog"))
        .arg("--config")
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

/// Wait (up to 60 s) until the server at `url` answers `/ready`.
pub async fn wait_ready(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{url}/ready")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("server at {url} never became ready")
}

/// A free loopback port.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
