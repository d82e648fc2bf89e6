//! The newest state of a call, for the staleness checks (see `model`): what
//! this service recorded from the events it handled, and the `CALL_CARDS`
//! bucket, which scheduling's relay writes right after publishing and which
//! may therefore be ahead of this consumer.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use prost::Message as _;
use skileez_bus::Bus;
use skileez_proto::call as ev;
use sqlx::PgPool;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::model::CallView;
use crate::store;

/// A KV read slower than this is given up: the check then goes on with what
/// the database says.
const KV_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads the bucket once the bus is connected. Cheap to clone.
#[derive(Clone, Default)]
pub struct Cards {
    bus: Arc<OnceLock<Bus>>,
    bucket: Arc<OnceCell<kv::Store>>,
}

impl Cards {
    /// Called once NATS is reachable.
    pub fn connect(&self, bus: Bus) {
        let _ = self.bus.set(bus);
    }

    /// The card in the bucket, if the bucket answers in time.
    pub async fn from_bucket(&self, call_id: Uuid) -> Option<CallView> {
        let bus = self.bus.get()?;
        let read = async {
            let bucket = self
                .bucket
                .get_or_try_init(|| {
                    bus.jetstream()
                        .get_key_value(bus.names().cards_bucket.clone())
                })
                .await
                .map_err(|e| e.to_string())?;
            bucket
                .get(call_id.to_string())
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(KV_TIMEOUT, read).await {
            Ok(Ok(Some(bytes))) => ev::CallCard::decode(bytes.as_ref())
                .ok()
                .and_then(|card| CallView::of_card(&card)),
            Ok(Ok(None)) => None,
            Ok(Err(error)) => {
                tracing::debug!(%call_id, %error, "cannot read the call's card from the bucket");
                None
            }
            Err(_) => {
                tracing::debug!(%call_id, "the cards bucket did not answer in time");
                None
            }
        }
    }

    /// The newest state known from the database and the bucket.
    pub async fn newest(
        &self,
        pool: &PgPool,
        call_id: Uuid,
    ) -> Result<Option<CallView>, sqlx::Error> {
        let recorded = store::call_row(pool, call_id)
            .await?
            .and_then(|row| row.card())
            .and_then(|card| CallView::of_card(&card));
        let bucket = self.from_bucket(call_id).await;
        Ok(CallView::newest(recorded.into_iter().chain(bucket)))
    }
}
