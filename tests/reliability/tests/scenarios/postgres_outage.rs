//! Scenario 4: PostgreSQL (a private cluster) stopped in immediate mode
//! mid-load and started again, twice.

use std::time::Duration;

use skileez_reliability::scenario::Scenario;
use skileez_reliability::system::{Options, cycles, load_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_in_immediate_mode_and_restarted_loses_and_duplicates_nothing() {
    let config = load_config("pg", 26, 120, 3.0);
    let mut s = Scenario::start(
        "postgres-outage",
        Options {
            instances: 1,
            ..Options::default()
        },
        config,
    )
    .await;
    // One round per 26 s of load (small: one; full: four).
    let rounds = cycles(s.config.duration, 26);
    for (at, down) in (0..rounds).flat_map(|r| [(26 * r + 5, 5), (26 * r + 16, 3)]) {
        s.at(Duration::from_secs(at)).await;
        s.say("PostgreSQL: immediate shutdown");
        s.system.pg.stop_immediate();
        tokio::time::sleep(Duration::from_secs(down)).await;
        s.system.pg.restart().await;
        s.say(&format!(
            "PostgreSQL restarted after {down} s (crash recovery done)"
        ));
    }
    s.finish(false).await;
}
