//! `CallTimerService`: the timer service's commands. Internal: role `service`
//! only. Each is idempotent; a stale one answers with the call and
//! `applied = false`.

use skileez_domain::{ActorRole, Command, ReminderKind};
use skileez_proto::{call as ev, scheduling as pb};
use tonic::{Request, Response, Status};

use super::{Context, check_access};
use crate::{error::ApiError, validate};

pub struct TimerApi {
    ctx: Context,
}

impl TimerApi {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }

    async fn run<T>(
        &self,
        request: &Request<T>,
        call_id: &str,
        command: Result<Command, ApiError>,
    ) -> Result<pb::TimerCommandResponse, ApiError> {
        let principal = self.ctx.principal(request)?;
        principal.require(&[ActorRole::Service], "the timer commands")?;
        let command = command?;
        let id = validate::call_id("call_id", call_id)
            .map_err(|v| ApiError::InvalidArgument(vec![v]))?;
        self.ctx
            .scheduler
            .execute(
                &principal,
                id,
                None,
                |state| {
                    check_access(&principal, id, state, true)?;
                    Ok(command.clone())
                },
                |outcome| pb::TimerCommandResponse {
                    call: self.ctx.first_call(outcome),
                    applied: outcome.applied,
                },
            )
            .await
    }
}

/// `TriggerReminder`'s `kind`.
pub fn reminder_kind(kind: i32) -> Result<ReminderKind, ApiError> {
    match ev::ReminderKind::try_from(kind) {
        Ok(ev::ReminderKind::ReminderKind24h) => Ok(ReminderKind::Day),
        Ok(ev::ReminderKind::ReminderKind1h) => Ok(ReminderKind::Hour),
        _ => Err(ApiError::invalid(
            "kind",
            "must be REMINDER_KIND_24H or REMINDER_KIND_1H",
        )),
    }
}

#[tonic::async_trait]
impl pb::call_timer_service_server::CallTimerService for TimerApi {
    #[tracing::instrument(name = "MarkCallReady", skip_all, fields(call_id = %request.get_ref().call_id))]
    async fn mark_call_ready(
        &self,
        request: Request<pb::TimerCommandRequest>,
    ) -> Result<Response<pb::TimerCommandResponse>, Status> {
        Ok(Response::new(
            self.run(&request, &request.get_ref().call_id, Ok(Command::MarkReady))
                .await?,
        ))
    }

    #[tracing::instrument(name = "MarkCallMissed", skip_all, fields(call_id = %request.get_ref().call_id))]
    async fn mark_call_missed(
        &self,
        request: Request<pb::TimerCommandRequest>,
    ) -> Result<Response<pb::TimerCommandResponse>, Status> {
        Ok(Response::new(
            self.run(
                &request,
                &request.get_ref().call_id,
                Ok(Command::MarkMissed),
            )
            .await?,
        ))
    }

    #[tracing::instrument(name = "TriggerReminder", skip_all, fields(call_id = %request.get_ref().call_id))]
    async fn trigger_reminder(
        &self,
        request: Request<pb::TriggerReminderRequest>,
    ) -> Result<Response<pb::TimerCommandResponse>, Status> {
        let message = request.get_ref();
        let command = reminder_kind(message.kind).map(|kind| Command::TriggerReminder { kind });
        Ok(Response::new(
            self.run(&request, &message.call_id, command).await?,
        ))
    }

    #[tracing::instrument(name = "CompleteOverdueCall", skip_all, fields(call_id = %request.get_ref().call_id))]
    async fn complete_overdue_call(
        &self,
        request: Request<pb::TimerCommandRequest>,
    ) -> Result<Response<pb::TimerCommandResponse>, Status> {
        Ok(Response::new(
            self.run(
                &request,
                &request.get_ref().call_id,
                Ok(Command::CompleteOverdue),
            )
            .await?,
        ))
    }
}
