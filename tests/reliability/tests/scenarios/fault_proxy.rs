//! Scenario 5: the fault proxy in front of PostgreSQL and of NATS: latency,
//! connection resets and black holes, one after the other, mid-load.

use std::time::Duration;

use skileez_reliability::proxy::Mode;
use skileez_reliability::scenario::Scenario;
use skileez_reliability::system::{Options, cycles, load_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_resets_and_black_holes_towards_postgres_and_nats_lose_and_duplicate_nothing() {
    let config = load_config("proxy", 30, 120, 3.0);
    let s = Scenario::start(
        "fault-proxy",
        Options {
            instances: 1,
            proxy_postgres: true,
            proxy_nats: true,
            ..Options::default()
        },
        config,
    )
    .await;
    let pg = s.system.pg_proxy.as_ref().expect("pg proxy");
    let nats = s.system.nats_proxy.as_ref().expect("nats proxy");
    let steps: &[(u64, &str, Option<Mode>, Option<Mode>)] = &[
        (
            3,
            "latency 100 ms on both",
            Some(Mode::Latency(Duration::from_millis(100))),
            Some(Mode::Latency(Duration::from_millis(100))),
        ),
        (8, "pass", Some(Mode::Pass), Some(Mode::Pass)),
        (
            9,
            "reset every PostgreSQL connection",
            Some(Mode::Reset),
            None,
        ),
        (10, "pass", Some(Mode::Pass), None),
        (12, "reset every NATS connection", None, Some(Mode::Reset)),
        (13, "pass", None, Some(Mode::Pass)),
        (
            15,
            "black hole towards PostgreSQL for 5 s",
            Some(Mode::BlackHole),
            None,
        ),
        (20, "pass", Some(Mode::Pass), None),
        (
            22,
            "black hole towards NATS for 8 s",
            None,
            Some(Mode::BlackHole),
        ),
        (30, "pass", None, Some(Mode::Pass)),
    ];
    // One round per 30 s of load (small: one; full: four).
    let rounds = cycles(s.config.duration, 30);
    for (round, (at, what, pg_mode, nats_mode)) in
        (0..rounds).flat_map(|r| steps.iter().map(move |step| (r, step)))
    {
        s.at(Duration::from_secs(30 * round + at)).await;
        s.say(what);
        if let Some(mode) = pg_mode {
            pg.set(*mode);
        }
        if let Some(mode) = nats_mode {
            nats.set(*mode);
        }
    }
    let (pg_conns, pg_resets) = pg.counts();
    let (nats_conns, nats_resets) = nats.counts();
    s.say(&format!(
        "proxies: PostgreSQL {pg_conns} connections, {pg_resets} reset; NATS {nats_conns} connections, {nats_resets} reset"
    ));
    assert!(
        pg_resets > 0 && nats_resets > 0,
        "the resets reached connections"
    );
    s.finish(false).await;
}
