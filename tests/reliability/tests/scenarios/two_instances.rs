//! Scenario 6: two instances of every service at once; one instance of each
//! is SIGKILLed mid-load and stays down: the others carry on alone.

use std::time::Duration;

use skileez_reliability::scenario::Scenario;
use skileez_reliability::system::{Options, load_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_instances_of_every_service_one_killed_nothing_is_lost_or_doubled() {
    let config = load_config("two", 24, 120, 3.0);
    let mut s = Scenario::start(
        "two-instances",
        Options {
            instances: 2,
            ..Options::default()
        },
        config,
    )
    .await;
    s.at(Duration::from_secs(9)).await;
    s.say("SIGKILL scheduling-0, timers-0 and notifications-0");
    s.system.scheduling[0].kill();
    s.system.timers[0].kill();
    s.system.notifications[0].kill();
    s.finish(true).await;
}
