//! `DirectoryService`: participants and contracts, normally projected from
//! the platform's user and contract events; these RPCs let an admin or a
//! service upsert them for standalone use. Roles `admin` and `service` only.

use skileez_domain::{ActorRole, ContractSnapshot, ContractStatus, time};
use skileez_proto::scheduling as pb;
use tonic::{Request, Response, Status};

use super::Context;
use crate::{
    error::{ApiError, Violation},
    repo::{self, ParticipantRow},
    validate::{self, Checks},
};

const ROLES: &[ActorRole] = &[ActorRole::Admin, ActorRole::Service];

pub struct DirectoryApi {
    ctx: Context,
}

impl DirectoryApi {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }

    fn authorize<T>(&self, request: &Request<T>) -> Result<(), ApiError> {
        self.ctx.principal(request)?.require(ROLES, "the directory")
    }
}

pub fn participant_to_pb(p: ParticipantRow) -> pb::Participant {
    pb::Participant {
        user_id: p.user_id,
        display_name: p.display_name,
        email: p.email,
        time_zone: p.time_zone,
        locale: p.locale,
        email_enabled: p.email_enabled,
    }
}

pub fn contract_status_to_pb(status: ContractStatus) -> pb::ContractStatus {
    match status {
        ContractStatus::Accepted => pb::ContractStatus::Accepted,
        ContractStatus::Paid => pb::ContractStatus::Paid,
        ContractStatus::Cancelled => pb::ContractStatus::Cancelled,
        ContractStatus::Completed => pb::ContractStatus::Completed,
    }
}

pub fn contract_to_pb(c: ContractSnapshot) -> pb::Contract {
    pb::Contract {
        contract_id: c.id.to_string(),
        student_id: c.student_id.to_string(),
        coach_id: c.coach_id.to_string(),
        status: contract_status_to_pb(c.status).into(),
        session_minutes: c.session_minutes,
        sessions: Some(match c.sessions_total {
            Some(total) => pb::contract::Sessions::SessionsTotal(total),
            None => pb::contract::Sessions::Unlimited(true),
        }),
        sessions_used: c.sessions_used,
    }
}

pub fn validate_participant(p: &pb::Participant) -> Result<ParticipantRow, ApiError> {
    let mut checks = Checks::new();
    let user_id = checks.take(validate::user_id("participant.user_id", &p.user_id));
    let display_name = p.display_name.trim();
    if display_name.is_empty() || display_name.chars().count() > 200 {
        checks.push(Violation::new(
            "participant.display_name",
            "required, at most 200 characters",
        ));
    }
    let email = p.email.trim();
    let well_formed = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !well_formed {
        checks.push(Violation::new(
            "participant.email",
            "required: an e-mail address such as ada@example.com",
        ));
    }
    if time::parse_zone(&p.time_zone).is_err() {
        checks.push(Violation::new(
            "participant.time_zone",
            format!(
                "{:?} is not an IANA time zone such as Europe/Berlin",
                p.time_zone.chars().take(64).collect::<String>()
            ),
        ));
    }
    let locale_ok = !p.locale.is_empty()
        && p.locale.len() <= 35
        && p.locale
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !locale_ok {
        checks.push(Violation::new(
            "participant.locale",
            "required: a BCP 47 tag such as en-US",
        ));
    }
    checks.finish()?;
    Ok(ParticipantRow {
        user_id: user_id.map(|u| u.to_string()).unwrap_or_default(),
        display_name: display_name.to_owned(),
        email: email.to_owned(),
        time_zone: p.time_zone.clone(),
        locale: p.locale.clone(),
        email_enabled: p.email_enabled,
    })
}

pub fn validate_contract(c: &pb::Contract) -> Result<ContractSnapshot, ApiError> {
    let mut checks = Checks::new();
    let id = checks.take(validate::contract_id(
        "contract.contract_id",
        &c.contract_id,
    ));
    let student = checks.take(validate::user_id("contract.student_id", &c.student_id));
    let coach = checks.take(validate::user_id("contract.coach_id", &c.coach_id));
    if student.is_some() && student == coach {
        checks.push(Violation::new(
            "contract.coach_id",
            "the coach and the student must be different people",
        ));
    }
    let status = match pb::ContractStatus::try_from(c.status) {
        Ok(pb::ContractStatus::Accepted) => Some(ContractStatus::Accepted),
        Ok(pb::ContractStatus::Paid) => Some(ContractStatus::Paid),
        Ok(pb::ContractStatus::Cancelled) => Some(ContractStatus::Cancelled),
        Ok(pb::ContractStatus::Completed) => Some(ContractStatus::Completed),
        _ => {
            checks.push(Violation::new(
                "contract.status",
                "must be ACCEPTED, PAID, CANCELLED or COMPLETED",
            ));
            None
        }
    };
    if !(15..=240).contains(&c.session_minutes) {
        checks.push(Violation::new(
            "contract.session_minutes",
            "must be between 15 and 240",
        ));
    }
    let sessions_total = match c.sessions {
        Some(pb::contract::Sessions::SessionsTotal(total)) if total > 0 => Some(Some(total)),
        Some(pb::contract::Sessions::Unlimited(true)) => Some(None),
        _ => {
            checks.push(Violation::new(
                "contract.sessions",
                "set sessions_total (at least 1) or unlimited = true",
            ));
            None
        }
    };
    checks.finish()?;
    match (id, student, coach, status, sessions_total) {
        (Some(id), Some(student_id), Some(coach_id), Some(status), Some(sessions_total)) => {
            Ok(ContractSnapshot {
                id,
                student_id,
                coach_id,
                status,
                session_minutes: c.session_minutes,
                sessions_total,
                sessions_used: 0,
            })
        }
        _ => Err(ApiError::invalid("contract", "incomplete")),
    }
}

#[tonic::async_trait]
impl pb::directory_service_server::DirectoryService for DirectoryApi {
    #[tracing::instrument(name = "UpsertParticipant", skip_all)]
    async fn upsert_participant(
        &self,
        request: Request<pb::UpsertParticipantRequest>,
    ) -> Result<Response<pb::Participant>, Status> {
        self.authorize(&request)?;
        let participant = request
            .get_ref()
            .participant
            .as_ref()
            .ok_or_else(|| ApiError::invalid("participant", "required"))?;
        let row = validate_participant(participant)?;
        let saved = repo::upsert_participant(self.ctx.scheduler.pool(), &row)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(participant_to_pb(saved)))
    }

    #[tracing::instrument(name = "UpsertContract", skip_all)]
    async fn upsert_contract(
        &self,
        request: Request<pb::UpsertContractRequest>,
    ) -> Result<Response<pb::Contract>, Status> {
        self.authorize(&request)?;
        let contract = request
            .get_ref()
            .contract
            .as_ref()
            .ok_or_else(|| ApiError::invalid("contract", "required"))?;
        let snapshot = validate_contract(contract)?;
        match repo::upsert_contract(self.ctx.scheduler.pool(), &snapshot).await {
            Ok(saved) => Ok(Response::new(contract_to_pb(saved))),
            Err(e)
                if repo::db_violation(&e)
                    .is_some_and(|(code, _)| code == repo::CHECK_VIOLATION) =>
            {
                Err(ApiError::invalid(
                    "contract.sessions_total",
                    "is below the sessions already booked under this contract",
                )
                .into())
            }
            Err(e) => Err(ApiError::from(e).into()),
        }
    }

    #[tracing::instrument(name = "GetParticipant", skip_all)]
    async fn get_participant(
        &self,
        request: Request<pb::GetParticipantRequest>,
    ) -> Result<Response<pb::Participant>, Status> {
        self.authorize(&request)?;
        let id = validate::user_id("user_id", &request.get_ref().user_id)
            .map_err(|v| ApiError::InvalidArgument(vec![v]))?;
        let row = repo::participant(self.ctx.scheduler.pool(), id.as_str())
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| {
                ApiError::NotFound(format!("participant {id} is not in the directory"))
            })?;
        Ok(Response::new(participant_to_pb(row)))
    }

    #[tracing::instrument(name = "GetContract", skip_all)]
    async fn get_contract(
        &self,
        request: Request<pb::GetContractRequest>,
    ) -> Result<Response<pb::Contract>, Status> {
        self.authorize(&request)?;
        let id = validate::contract_id("contract_id", &request.get_ref().contract_id)
            .map_err(|v| ApiError::InvalidArgument(vec![v]))?;
        let contract = repo::contract(self.ctx.scheduler.pool(), &id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound(format!("contract {id} is not known")))?;
        Ok(Response::new(contract_to_pb(contract)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_time_zone_is_not_echoed_whole() {
        // Found by random_requests: a zone of thousands of characters came
        // back whole in the error, too large for the client to receive
        // (h2 protocol error instead of INVALID_ARGUMENT).
        let participant = pb::Participant {
            user_id: "stu-1".into(),
            display_name: String::new(),
            email: String::new(),
            time_zone: "&".repeat(5_000),
            locale: String::new(),
            email_enabled: false,
        };
        let Err(ApiError::InvalidArgument(violations)) = validate_participant(&participant) else {
            panic!("expected INVALID_ARGUMENT");
        };
        let zone = violations
            .iter()
            .find(|v| v.field == "participant.time_zone")
            .expect("a time zone violation");
        assert!(zone.description.len() < 200, "{zone:?}");
    }
}
