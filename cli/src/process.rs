//! This process: its stop signal (SIGTERM or SIGINT) and its name as a lease holder.

/// SIGTERM or SIGINT received (once a signal came, it stays requested).
#[derive(Clone)]
pub(crate) struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    /// Start listening for SIGTERM and SIGINT.
    pub(crate) fn listen() -> Shutdown {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signal().await;
            tracing::info!("stop requested: finishing the running cycle");
            let _ = tx.send(true);
            // Keep the sender: receivers then see `true`, not a closed channel.
            std::future::pending::<()>().await;
        });
        Shutdown(rx)
    }

    pub(crate) fn requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once a stop was requested.
    pub(crate) async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

#[cfg(unix)]
async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// The default lease holder name of this process: `<role>-<pid>@<host>`.
pub(crate) fn holder(role: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{role}-{}@{host}", std::process::id())
}
