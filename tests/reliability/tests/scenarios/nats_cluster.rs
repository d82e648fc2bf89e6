//! Scenario 3: a 3-node NATS cluster (streams at 3 replicas, `sync_interval:
//! always`): one node killed during load and brought back, then the
//! CALL_EVENTS stream's leader killed and brought back.

use std::time::Duration;

use skileez_reliability::scenario::Scenario;
use skileez_reliability::system::{Options, cycles, load_config};

/// The CALL_EVENTS stream's leader, once one is elected (right after a
/// node was killed the cluster may need some seconds to choose one).
async fn stream_leader(url: &str) -> String {
    let urls: Vec<String> = url.split(',').map(str::to_owned).collect();
    let client = async_nats::connect(urls).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        match js.get_stream("CALL_EVENTS").await {
            Ok(stream) => {
                let info = stream.cached_info();
                assert_eq!(info.config.num_replicas, 3, "the stream has 3 replicas");
                if let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone()) {
                    return leader;
                }
                last = "no leader yet".to_owned();
            }
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("CALL_EVENTS has no leader after 60 s: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_then_the_stream_leader_killed_in_a_3_node_cluster_loses_and_duplicates_nothing() {
    let config = load_config("cluster", 28, 120, 2.5);
    let mut s = Scenario::start(
        "nats-cluster",
        Options {
            instances: 1,
            cluster: true,
            ..Options::default()
        },
        config,
    )
    .await;
    let url = s.system.nats.url();
    // One round per 28 s of load (small: one; full: four).
    for round in 0..cycles(s.config.duration, 28) {
        let base = Duration::from_secs(28 * round);
        s.at(base + Duration::from_secs(5)).await;
        let leader = stream_leader(&url).await;
        let cluster = s.system.nats.cluster();
        let follower = (0..3)
            .find(|i| cluster.name(*i) != leader)
            .expect("a follower");
        let name = cluster.name(follower).to_owned();
        s.say(&format!("SIGKILL node {name} (a follower)"));
        s.system.nats.cluster().kill(follower);
        tokio::time::sleep(Duration::from_secs(5)).await;
        s.system.nats.cluster().restart(follower).await;
        s.say("node back");
        s.at(base + Duration::from_secs(16)).await;
        let leader = stream_leader(&url).await;
        let index = s
            .system
            .nats
            .cluster()
            .index_of(&leader)
            .expect("leader node");
        s.say(&format!("SIGKILL node {leader}, the stream's leader"));
        s.system.nats.cluster().kill(index);
        tokio::time::sleep(Duration::from_secs(5)).await;
        s.system.nats.cluster().restart(index).await;
        let after = stream_leader(&url).await;
        s.say(&format!(
            "node {leader} back; the stream's leader is now {after}"
        ));
    }
    s.finish(false).await;
}
