//! A 3-node NATS cluster with JetStream on loopback, each node with its own
//! store, `sync_interval: always` (every write fsynced before it is
//! acknowledged), routes to the others on free ports. A node can be killed
//! (SIGKILL) and started again on its ports and store.
//!
//! The binary: `SKILEEZ_NATS_SERVER_BIN` (2.10 or later; `deploy/local/env.sh`
//! exports it), else `nats-server` on `PATH`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::process::{free_port, spawn};

pub const NODES: usize = 3;

struct Node {
    name: String,
    port: u16,
    monitor_port: u16,
    config: PathBuf,
    child: Option<Child>,
}

pub struct NatsCluster {
    dir: tempfile::TempDir,
    binary: PathBuf,
    nodes: Vec<Node>,
}

impl NatsCluster {
    /// Starts the three nodes and waits until each reports healthy with
    /// JetStream (a meta leader elected).
    pub async fn start() -> NatsCluster {
        let binary = std::env::var_os("SKILEEZ_NATS_SERVER_BIN")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("nats-server"));
        let dir = tempfile::Builder::new()
            .prefix("skileez-nats-cluster-")
            .tempdir()
            .expect("a directory for the cluster");
        let routes: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
        let mut nodes = Vec::new();
        for i in 0..NODES {
            let name = format!("n{i}");
            let (port, monitor_port) = (free_port(), free_port());
            let store = dir.path().join(&name);
            let others: Vec<String> = routes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| format!("nats-route://127.0.0.1:{p}"))
                .collect();
            let config = dir.path().join(format!("{name}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor_port}\n\
                     jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n\
                     cluster {{\n  name: skileez-test\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                    store.display(),
                    routes[i],
                    others.join(", ")
                ),
            )
            .expect("node config");
            nodes.push(Node {
                name,
                port,
                monitor_port,
                config,
                child: None,
            });
        }
        let mut cluster = NatsCluster { dir, binary, nodes };
        for i in 0..NODES {
            cluster.launch(i);
        }
        for i in 0..NODES {
            cluster.wait_healthy(i).await;
        }
        cluster
    }

    /// Every node's client URL, comma-separated (clients fail over).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn name(&self, node: usize) -> &str {
        &self.nodes[node].name
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    fn launch(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {i} is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", node.name)))
            .expect("log");
        let mut command = Command::new(&self.binary);
        command
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        node.child = Some(spawn(command).expect("nats-server starts"));
    }

    async fn wait_healthy(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !healthy(self.nodes[i].monitor_port).await {
            assert!(
                Instant::now() < deadline,
                "node {} not healthy in 60 s",
                self.nodes[i].name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: the node's store keeps what was fsynced.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed node again on its ports and store, waits for healthy.
    pub async fn restart(&mut self, i: usize) {
        self.launch(i);
        self.wait_healthy(i).await;
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..NODES {
            self.kill(i);
        }
    }
}

/// `GET /healthz` answers 200 once the node, JetStream included, is ready.
async fn healthy(port: u16) -> bool {
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(response)) => {
            let text = String::from_utf8_lossy(&response);
            text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200")
        }
        _ => false,
    }
}
