//! Scenario 1: SIGKILL of each service in turn mid-load, then of all three
//! at once, each restarted two seconds later.

use std::time::Duration;

use skileez_reliability::scenario::Scenario;
use skileez_reliability::system::{Options, load_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_each_service_and_of_all_three_loses_and_duplicates_nothing() {
    let config = load_config("kills", 24, 120, 3.0);
    let mut s = Scenario::start(
        "kills",
        Options {
            instances: 1,
            ..Options::default()
        },
        config,
    )
    .await;
    let span = s.config.duration;
    let step = span / 5;
    for (i, victim) in ["scheduling", "timers", "notifications"].iter().enumerate() {
        s.at(step * (i as u32 + 1)).await;
        s.say(&format!("SIGKILL {victim}"));
        let service = match *victim {
            "scheduling" => &mut s.system.scheduling[0],
            "timers" => &mut s.system.timers[0],
            _ => &mut s.system.notifications[0],
        };
        service.kill();
        tokio::time::sleep(Duration::from_secs(2)).await;
        service.restart();
        s.say(&format!("{victim} restarted"));
    }
    s.at(step * 4).await;
    s.say("SIGKILL all three");
    for service in s.system.services() {
        service.kill();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for service in s.system.services() {
        service.restart();
    }
    s.say("all three restarted");
    s.finish(true).await;
}
