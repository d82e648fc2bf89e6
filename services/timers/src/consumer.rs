//! The call-event consumer: turns each call event into timer writes, in one
//! transaction with its inbox entry.
//!
//! Every call event passes through here (the consumer takes the whole call
//! stream), so a call's versions arrive without gaps and
//! [`inbox::advance`] keeps them in order: an event whose predecessor has not
//! been applied yet is retried, one applied before (a redelivery, or a late
//! copy) changes nothing. The rows carry the version that last set them as a
//! second guard, so even with the inbox purged a late event cannot bring a
//! retired timer back.
//!
//! After the commit, a timer due sooner than the claim loop planned to look
//! wakes it (in-process), and one due soon wakes the other instances
//! (`NOTIFY`, outside the transaction).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use prost::Message;
use skileez_bus::{Delivery, Handler, HandlerError, inbox};
use skileez_domain::Policy;
use skileez_proto::call as ev;
use sqlx::PgPool;
use uuid::Uuid;

use crate::engine::Wake;
use crate::plan::{Plan, plan};
use crate::store;

/// The durable consumer's name, shared by every timers instance.
pub const CONSUMER: &str = "timers";

pub struct TimerConsumer {
    pub pool: PgPool,
    pub policy: Policy,
    pub wake: Arc<Wake>,
    /// Timers due within this long wake the other instances too (their loops
    /// never sleep longer).
    pub max_idle: Duration,
}

fn retry(error: sqlx::Error) -> HandlerError {
    HandlerError::Retry(format!("database: {error}"))
}

fn non_empty(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}

#[skileez_bus::async_trait]
impl Handler for TimerConsumer {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let event = ev::CallEvent::decode(delivery.payload.as_ref())
            .map_err(|e| HandlerError::Poison(format!("not a CallEvent: {e}")))?;
        let call_id = Uuid::parse_str(&event.call_id)
            .map_err(|e| HandlerError::Poison(format!("call id {:?}: {e}", event.call_id)))?;
        let version = i64::try_from(event.stream_version)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| {
                HandlerError::Poison(format!("stream version {}", event.stream_version))
            })?;
        let plan = plan(&event, &self.policy).map_err(|e| HandlerError::Poison(e.to_string()))?;
        let event_id = delivery
            .event_id
            .or_else(|| Uuid::parse_str(&event.event_id).ok());

        let mut tx = self.pool.begin().await.map_err(retry)?;
        if let Some(event_id) = event_id
            && !inbox::claim(&mut tx, CONSUMER, event_id)
                .await
                .map_err(retry)?
        {
            return Ok(());
        }
        match inbox::advance(&mut tx, CONSUMER, &event.call_id, event.stream_version)
            .await
            .map_err(retry)?
        {
            inbox::Order::Next => {}
            inbox::Order::Stale => {
                tx.commit().await.map_err(retry)?;
                return Ok(());
            }
            inbox::Order::Ahead { expected } => {
                // Rolled back with the claim, so the redelivery is not
                // mistaken for a duplicate.
                return Err(HandlerError::Retry(format!(
                    "call {call_id} version {} before version {expected}",
                    event.stream_version
                )));
            }
        }
        let earliest = match &plan {
            Plan::Create { call_start, timers } => {
                let traceparent = non_empty(&event.traceparent).or(delivery.traceparent());
                let tracestate = non_empty(&event.tracestate).or(delivery.tracestate());
                store::insert(
                    &mut tx,
                    call_id,
                    version,
                    *call_start,
                    timers,
                    traceparent,
                    tracestate,
                )
                .await
                .map_err(retry)?
            }
            Plan::Retire(kinds) => {
                store::retire(&mut tx, call_id, version, kinds)
                    .await
                    .map_err(retry)?;
                None
            }
            Plan::Nothing => None,
        };
        tx.commit().await.map_err(retry)?;
        if let Some(due) = earliest {
            self.wake.timer_written(due);
            if due < Utc::now() + chrono::Duration::from_std(self.max_idle).unwrap_or_default() {
                store::notify(&self.pool, due).await;
            }
        }
        tracing::debug!(%call_id, version, plan = ?plan_name(&plan), "call event applied to timers");
        Ok(())
    }
}

fn plan_name(plan: &Plan) -> &'static str {
    match plan {
        Plan::Create { .. } => "create",
        Plan::Retire(_) => "retire",
        Plan::Nothing => "nothing",
    }
}
