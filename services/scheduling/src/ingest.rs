//! Ingest of the platform's facts: contract and participant updates from the
//! bus (`skileez.contract.v1.ContractUpdated.<id>`,
//! `skileez.user.v1.ParticipantUpdated.<id>`) projected into the directory.
//!
//! Each message is applied in one transaction together with its inbox entry
//! (so a redelivery changes nothing), and only when its `version` is newer
//! than the one the row was last projected from (so a late, older message
//! never overwrites newer data). A message that can never apply — it does not
//! decode or its data is invalid — is poison and goes to the dead-letter
//! subject; a database failure is retried.

use prost::Message;
use skileez_bus::{Delivery, Handler, HandlerError, inbox};
use skileez_proto::{contract as ct, scheduling as pb, user as us};
use sqlx::PgPool;

use crate::{
    api::directory::{validate_contract, validate_participant},
    repo,
};

/// The durable consumer's name, shared by every scheduling instance.
pub const CONSUMER: &str = "scheduling-directory";

pub struct DirectoryIngest {
    pub pool: PgPool,
}

fn poison(what: &str, error: impl std::fmt::Display) -> HandlerError {
    HandlerError::Poison(format!("{what}: {error}"))
}

fn retry(error: sqlx::Error) -> HandlerError {
    HandlerError::Retry(format!("database: {error}"))
}

fn contract_to_pb(message: ct::ContractUpdated) -> pb::Contract {
    pb::Contract {
        contract_id: message.contract_id,
        student_id: message.student_id,
        coach_id: message.coach_id,
        // The two enums share their numbering.
        status: message.status,
        session_minutes: message.session_minutes,
        sessions: message.sessions.map(|s| match s {
            ct::contract_updated::Sessions::SessionsTotal(n) => {
                pb::contract::Sessions::SessionsTotal(n)
            }
            ct::contract_updated::Sessions::Unlimited(u) => pb::contract::Sessions::Unlimited(u),
        }),
        sessions_used: 0,
    }
}

fn participant_to_pb(message: us::ParticipantUpdated) -> pb::Participant {
    pb::Participant {
        user_id: message.user_id,
        display_name: message.display_name,
        email: message.email,
        time_zone: message.time_zone,
        locale: message.locale,
        email_enabled: message.email_enabled,
    }
}

#[tonic::async_trait]
impl Handler for DirectoryIngest {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let mut tx = self.pool.begin().await.map_err(retry)?;
        if let Some(event_id) = delivery.event_id
            && !inbox::claim(&mut tx, CONSUMER, event_id)
                .await
                .map_err(retry)?
        {
            return Ok(());
        }
        let kind = delivery.subject.split('.').nth(3).unwrap_or_default();
        match kind {
            "ContractUpdated" => {
                let message = ct::ContractUpdated::decode(delivery.payload.as_ref())
                    .map_err(|e| poison("ContractUpdated does not decode", e))?;
                let version = message.version;
                let contract = validate_contract(&contract_to_pb(message))
                    .map_err(|e| poison("invalid ContractUpdated", e))?;
                match repo::ingest_contract(&mut tx, &contract, version).await {
                    Ok(applied) => {
                        tracing::debug!(contract_id = %contract.id, version, applied, "contract ingested")
                    }
                    Err(e)
                        if repo::db_violation(&e)
                            .is_some_and(|(code, _)| code == repo::CHECK_VIOLATION) =>
                    {
                        return Err(poison(
                            "ContractUpdated sets fewer sessions than are booked",
                            e,
                        ));
                    }
                    Err(e) => return Err(retry(e)),
                }
            }
            "ParticipantUpdated" => {
                let message = us::ParticipantUpdated::decode(delivery.payload.as_ref())
                    .map_err(|e| poison("ParticipantUpdated does not decode", e))?;
                let version = message.version;
                let participant = validate_participant(&participant_to_pb(message))
                    .map_err(|e| poison("invalid ParticipantUpdated", e))?;
                repo::ingest_participant(&mut tx, &participant, version)
                    .await
                    .map_err(retry)?;
            }
            other => return Err(poison("unknown platform event", other)),
        }
        tx.commit().await.map_err(retry)?;
        Ok(())
    }
}
