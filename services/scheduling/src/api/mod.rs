//! The gRPC surface: one module per service. Handlers authenticate, validate
//! their whole input, then hand over to the command handler or the read
//! models; they never build a `tonic::Status` themselves (see `error`).

pub mod availability;
pub mod directory;
pub mod scheduling;
pub mod timers;

use std::sync::Arc;

use chrono::Utc;
use skileez_domain::{Call, CallId};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::Request;

use crate::{
    app::{Outcome, Scheduler},
    auth::{Authenticator, Principal},
    error::ApiError,
    feed::FeedHub,
    mapping,
};
use skileez_proto::scheduling as pb;

/// What every handler shares.
pub struct Shared {
    pub scheduler: Scheduler,
    /// The query RPCs' pool; commands go through the scheduler's.
    pub reads: sqlx::PgPool,
    pub auth: Authenticator,
    /// With client certificates verified (mTLS), a `service` token counts
    /// only when it comes with one: a leaked service token alone is not
    /// enough to fire timers or act as staff.
    pub service_needs_certificate: bool,
    /// Per user, on the RPCs that book and change calls.
    pub rate_limiter: skileez_edge::RateLimiter,
    /// Display names for ListCalls' cards.
    pub names: crate::names::NameCache,
    pub hub: FeedHub,
    /// Owns the per-client watch tasks so shutdown can wait for them.
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
}

pub type Context = Arc<Shared>;

impl Shared {
    pub fn principal<T>(&self, request: &Request<T>) -> Result<Principal, ApiError> {
        let principal = self.auth.authenticate(request.metadata())?;
        if self.service_needs_certificate
            && principal.role == skileez_domain::ActorRole::Service
            && !skileez_edge::has_client_certificate(request)
        {
            return Err(ApiError::Unauthenticated(
                "a service token is accepted only over mTLS, with a client certificate of the configured CA".into(),
            ));
        }
        Ok(principal)
    }

    /// The caller of a booking or change RPC, within its rate limit (staff
    /// and services are not limited).
    pub fn limited_principal<T>(&self, request: &Request<T>) -> Result<Principal, ApiError> {
        let principal = self.principal(request)?;
        if !principal.is_privileged()
            && let Err(wait) = self.rate_limiter.check(principal.user_id.as_str())
        {
            return Err(ApiError::RateLimited { retry_after: wait });
        }
        Ok(principal)
    }

    /// The first call of an outcome, as the API shows it now.
    pub fn first_call(&self, outcome: &Outcome) -> Option<pb::Call> {
        outcome.calls.first().map(|c| self.show(c, outcome))
    }

    pub fn show(&self, call: &Call, outcome: &Outcome) -> pb::Call {
        mapping::call(call, &outcome.names, Utc::now(), self.scheduler.policy())
    }
}

/// The message both an unknown call and someone else's call get, so that a
/// caller learns nothing about calls that are not theirs (AIP-211: permission
/// is checked before existence).
fn not_yours(id: CallId) -> ApiError {
    ApiError::PermissionDenied(format!(
        "call {id} is not one of your calls (or does not exist)"
    ))
}

/// Who may see or act on a call: its student and coach, and — where
/// `privileged_ok` — admins and services, who are also the only ones told
/// that a call does not exist.
pub fn check_access<'a>(
    principal: &Principal,
    id: CallId,
    call: Option<&'a Call>,
    privileged_ok: bool,
) -> Result<&'a Call, ApiError> {
    let privileged = privileged_ok && principal.is_privileged();
    match call {
        Some(call) if privileged || call.is_participant(&principal.user_id) => Ok(call),
        None if privileged => Err(ApiError::NotFound(format!("call {id} does not exist"))),
        _ => Err(not_yours(id)),
    }
}
