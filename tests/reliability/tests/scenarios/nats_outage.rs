//! Scenario 2: NATS killed (SIGKILL) and started again on the same store
//! directory, then frozen with SIGSTOP for 15 s, mid-load.

use std::time::Duration;

use skileez_reliability::scenario::Scenario;
use skileez_reliability::system::{Options, cycles, load_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_and_restarted_then_paused_for_15_s_loses_and_duplicates_nothing() {
    let config = load_config("nats", 30, 120, 2.5);
    let mut s = Scenario::start(
        "nats-outage",
        Options {
            instances: 1,
            ..Options::default()
        },
        config,
    )
    .await;
    // One round per 30 s of load (small: one; full: four).
    for round in 0..cycles(s.config.duration, 30) {
        let base = Duration::from_secs(30 * round);
        s.at(base + Duration::from_secs(4)).await;
        s.say("SIGKILL nats-server");
        s.system.nats.single().kill();
        tokio::time::sleep(Duration::from_secs(3)).await;
        s.system.nats.single().start().await;
        s.say("nats-server restarted on the same store");
        s.at(base + Duration::from_secs(11)).await;
        s.say("SIGSTOP nats-server for 15 s");
        s.system.nats.single().pause();
        tokio::time::sleep(Duration::from_secs(15)).await;
        s.system.nats.single().resume();
        s.say("SIGCONT nats-server");
    }
    s.finish(false).await;
}
