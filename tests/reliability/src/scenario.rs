//! What every scenario does around its faults: start the system, register
//! the participants, run the load in the background while the test injects
//! its faults, then settle, ask again, check and report.

use std::time::Duration;

use crate::check::{self, Report};
use crate::load::{self, Booking, Client, LoadConfig};
use crate::system::{Options, System};

pub struct Scenario {
    pub name: &'static str,
    pub system: System,
    pub client: Client,
    pub config: LoadConfig,
    started: tokio::time::Instant,
    load: Option<tokio::task::JoinHandle<Vec<Booking>>>,
}

impl Scenario {
    /// Starts the system and the load.
    pub async fn start(name: &'static str, options: Options, config: LoadConfig) -> Scenario {
        let system = System::start(options).await;
        let client = system.client();
        load::register(&client, &config).await;
        let load = tokio::spawn(load::run(client.clone(), config.clone()));
        eprintln!(
            "[{name}] load: {} bookings over {:?} with {} coaches; logs in {}",
            config.bookings,
            config.duration,
            config.coaches,
            system.log_dir().display()
        );
        Scenario {
            name,
            system,
            client,
            config,
            started: tokio::time::Instant::now(),
            load: Some(load),
        }
    }

    /// Sleeps until `at` after the load started.
    pub async fn at(&self, at: Duration) {
        tokio::time::sleep_until(self.started + at).await;
    }

    /// Says what happens now, with the time since the load started.
    pub fn say(&self, what: &str) {
        eprintln!(
            "[{}] {:>5.1} s: {what}",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Waits for the load, lets the system settle, checks the invariants,
    /// prints the report and fails the test on any violation.
    pub async fn finish(mut self, resends_allowed: bool) -> Report {
        let mut bookings = self
            .load
            .take()
            .expect("load")
            .await
            .expect("the load panicked");
        self.say("load done");
        let crashed = self.system.crashed();
        assert!(
            crashed.is_empty(),
            "[{}] services died on their own: {crashed:?}; logs in {}",
            self.name,
            self.system.log_dir().display()
        );
        let asked_again = check::ask_again(&self.client, &mut bookings).await;
        let pool = self.system.pool().await;
        let settle = check::settle(&self.system, &pool, Duration::from_secs(90)).await;
        let mut report = check::check(&self.system, &pool, &bookings, resends_allowed).await;
        report.asked_again = asked_again;
        report.settle_seconds = settle;
        eprintln!("[{}] report:\n{report}", self.name);
        let crashed = self.system.crashed();
        assert!(
            crashed.is_empty(),
            "services died on their own: {crashed:?}"
        );
        assert!(
            report.violations.is_empty(),
            "[{}] invariants violated (logs in {}):\n{report}",
            self.name,
            self.system.log_dir().display()
        );
        assert!(report.bookings_ok > 0, "nothing was booked");
        report
    }
}
