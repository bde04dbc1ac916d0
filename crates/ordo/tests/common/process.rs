//! The real `ordo` binary as a child process.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    /// Starts `ordo` on the data dir and waits until it serves.
    pub fn start(data_dir: &Path, extra_env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ordo"));
        command
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .env_remove("ORDO_DATABASE_URL")
            .env_remove("ORDO_NATS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("Ordo is serving on ") {
                    let base = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(base);
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server starts");
        Self { child, base }
    }

    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "a graceful shutdown exits 0, got {exit}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `ordo` CLI and returns its stdout.
pub fn cli(data_dir: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .env_remove("ORDO_DATABASE_URL")
        .env_remove("ORDO_NATS_URL")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ordo {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A token for one of the demo clients the server wrote to `data_dir`.
pub async fn demo_token(http: &reqwest::Client, base: &str, data_dir: &Path, role: &str) -> String {
    let credentials: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("demo-credentials.json")).unwrap())
            .unwrap();
    let c = &credentials[role];
    let body: serde_json::Value = http
        .post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", c["client_id"].as_str().unwrap()),
            ("client_secret", c["client_secret"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}
