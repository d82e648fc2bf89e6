//! Scenario 7: a soak, mixed traffic at a steady rate (small: 40 s; full:
//! 10 minutes), then the invariants; the resident memory of each service is
//! sampled throughout and must not grow beyond its warm-up.

use std::collections::BTreeMap;
use std::time::Duration;

use skileez_reliability::scenario::Scenario;
use skileez_reliability::system::{Options, Size, load_config, size};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_soak_loses_nothing_and_no_service_grows() {
    let config = load_config("soak", 40, 600, 2.0);
    let every = match size() {
        Size::Small => Duration::from_secs(2),
        Size::Full => Duration::from_secs(10),
    };
    let mut s = Scenario::start(
        "soak",
        Options {
            instances: 1,
            ..Options::default()
        },
        config,
    )
    .await;
    let until = s.config.duration + s.config.lead + Duration::from_secs(3);
    let mut samples: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut tick = Duration::ZERO;
    while tick <= until {
        s.at(tick).await;
        for service in s.system.services() {
            let rss = service.rss_kib().expect("the service runs");
            samples.entry(service.name.clone()).or_default().push(rss);
        }
        tick += every;
    }
    let mut growth = Vec::new();
    for (name, rss) in &samples {
        // Warm-up: the first third. Afterwards the peak may not pass the
        // warm-up's peak by more than a quarter and 16 MiB.
        let third = rss.len() / 3;
        let warm = *rss[..third.max(1)].iter().max().expect("samples");
        let later = *rss[third..].iter().max().expect("samples");
        let last = *rss.last().expect("samples");
        s.say(&format!(
            "{name}: RSS {} samples; warm-up peak {} MiB, later peak {} MiB, last {} MiB",
            rss.len(),
            warm / 1024,
            later / 1024,
            last / 1024
        ));
        if later > warm + warm / 4 + 16 * 1024 {
            growth.push(format!("{name}: {warm} KiB → {later} KiB"));
        }
    }
    s.finish(false).await;
    assert!(growth.is_empty(), "memory grew beyond warm-up: {growth:?}");
}
