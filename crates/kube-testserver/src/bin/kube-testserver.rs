//! Runs a kube-testserver as a process, for manual use and labs.
//!
//! It loads objects from JSON or YAML files (or directories of them), writes a
//! kubeconfig, prints where both are, and serves until interrupted. Objects
//! can be changed while it runs with plain HTTP (`curl -X POST/PUT/PATCH/DELETE`)
//! or `kubectl --kubeconfig PATH`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kube_testserver::{ServerConfig, TestServer};

#[derive(Debug, Parser)]
#[command(
    name = "kube-testserver",
    about = "A local Kubernetes API server (list/watch of Services, EndpointSlices, Nodes, Pods, Namespaces) for tests and labs"
)]
struct Args {
    /// JSON or YAML manifests to load at start; directories are read for
    /// *.json, *.yaml and *.yml files, in name order.
    paths: Vec<PathBuf>,

    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,

    /// Where to write the kubeconfig (default: kube-testserver-PORT.kubeconfig
    /// in the temporary directory).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,

    /// Interval of watch bookmarks in milliseconds (0: none).
    #[arg(long, default_value_t = 1000)]
    bookmark_interval_ms: u64,

    /// Change events retained for resuming watches.
    #[arg(long, default_value_t = 4096)]
    history_limit: usize,
}

fn manifest_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "json" | "yaml" | "yml"))
        })
        .collect();
    files.sort();
    Ok(files)
}

async fn run(args: Args) -> Result<(), String> {
    let config = ServerConfig::default()
        .port(args.port)
        .bookmark_interval(Duration::from_millis(args.bookmark_interval_ms))
        .history_limit(args.history_limit);
    let server = TestServer::try_start_with(config)
        .await
        .map_err(|e| format!("cannot start: {e}"))?;
    for path in &args.paths {
        let files = manifest_files(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for file in files {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let applied = server
                .apply_manifest(&text)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            eprintln!("loaded {} object(s) from {}", applied.len(), file.display());
        }
    }
    let kubeconfig = args.kubeconfig.unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "kube-testserver-{}.kubeconfig",
            server.addr().port()
        ))
    });
    server
        .write_kubeconfig(&kubeconfig)
        .map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    println!("url: {}", server.url());
    println!("kubeconfig: {}", kubeconfig.display());
    wait_for_signal().await
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM.
async fn wait_for_signal() -> Result<(), String> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("installing the SIGTERM handler: {e}"))?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(|e| format!("waiting for Ctrl-C: {e}")),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| format!("waiting for Ctrl-C: {e}"))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-testserver: {e}");
            ExitCode::FAILURE
        }
    }
}
