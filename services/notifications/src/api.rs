//! The gRPC services: `NotificationService` for the person (their own
//! notifications only: the token's `sub`), `DeliveryService` for operators.
//! Handlers authenticate, validate and delegate to `store` and `live`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use skileez_auth::{Authenticator, Principal, Role};
use skileez_proto::notifications as pb;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::error::ApiError;
use crate::live::{self, LiveHub};
use crate::model::{Channel, DeliveryState};
use crate::store::{self, DeliveryFilter};

/// What every handler shares.
pub struct Shared {
    pub pool: PgPool,
    pub auth: Authenticator,
    pub hub: Arc<LiveHub<pb::Notification>>,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
    pub watch_poll: Duration,
    /// Wakes the delivery worker.
    pub wake: Arc<tokio::sync::Notify>,
    /// With client certificates verified (mTLS), a `service` token counts
    /// only with one (as at scheduling).
    pub service_needs_certificate: bool,
}

impl Shared {
    fn principal<T>(&self, request: &Request<T>) -> Result<Principal, ApiError> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|value| {
                value.to_str().map_err(|_| {
                    ApiError::Unauthenticated(
                        "the authorization metadata is not valid ASCII".to_owned(),
                    )
                })
            })
            .transpose()?;
        let principal = self.auth.authenticate(header)?;
        if self.service_needs_certificate
            && principal.role == skileez_auth::Role::Service
            && !skileez_edge::has_client_certificate(request)
        {
            return Err(ApiError::Unauthenticated(
                "a service token is accepted only over mTLS, with a client certificate of the configured CA".to_owned(),
            ));
        }
        Ok(principal)
    }
}

/// Messages a watcher may have queued before the stream waits for its client.
const WATCH_BUFFER: usize = 64;
const MAX_NOTIFICATION_PAGE: i32 = 200;
const DEFAULT_NOTIFICATION_PAGE: i32 = 50;
const MAX_DELIVERY_PAGE: i32 = 500;
const DEFAULT_DELIVERY_PAGE: i32 = 100;
const MAX_MARK_READ_IDS: usize = 1000;

pub struct NotificationApi {
    ctx: Arc<Shared>,
}

impl NotificationApi {
    pub fn new(ctx: Arc<Shared>) -> Self {
        Self { ctx }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Notification, Status>> + Send>>;

fn page_size(requested: i32, default: i32, max: i32, field: &str) -> Result<i64, ApiError> {
    match requested {
        0 => Ok(i64::from(default)),
        n if (1..=max).contains(&n) => Ok(i64::from(n)),
        _ => Err(ApiError::invalid(
            field,
            format!("must be between 1 and {max}"),
        )),
    }
}

/// Page tokens are `<letter><number>`: opaque to clients, checked here.
fn parse_token(token: &str, prefix: char) -> Result<Option<i64>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .strip_prefix(prefix)
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .map(Some)
        .ok_or_else(|| ApiError::invalid("page_token", "not a token this service handed out"))
}

/// `ListNotifications`: the page size and the page token's position.
pub fn validate_list_notifications(
    request: &pb::ListNotificationsRequest,
) -> Result<(i64, Option<i64>), ApiError> {
    let limit = page_size(
        request.page_size,
        DEFAULT_NOTIFICATION_PAGE,
        MAX_NOTIFICATION_PAGE,
        "page_size",
    )?;
    let before = parse_token(&request.page_token, 'n')?;
    Ok((limit, before))
}

/// `MarkRead`: the notifications to mark, `None` for all of them.
pub fn validate_mark_read(request: &pb::MarkReadRequest) -> Result<Option<Vec<Uuid>>, ApiError> {
    match (request.all, request.notification_ids.is_empty()) {
        (true, true) => Ok(None),
        (true, false) => Err(ApiError::invalid(
            "notification_ids",
            "must be empty when `all` is set",
        )),
        (false, true) => Err(ApiError::invalid(
            "notification_ids",
            "name at least one notification, or set `all`",
        )),
        (false, false) => {
            if request.notification_ids.len() > MAX_MARK_READ_IDS {
                return Err(ApiError::invalid(
                    "notification_ids",
                    format!("at most {MAX_MARK_READ_IDS} at once"),
                ));
            }
            let ids = request
                .notification_ids
                .iter()
                .map(|id| Uuid::parse_str(id.trim()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| ApiError::invalid("notification_ids", "each must be a UUID"))?;
            Ok(Some(ids))
        }
    }
}

/// `ListDeliveries`: the filter (asking for one row more than a page, to
/// tell whether another page follows) and the page size.
pub fn validate_list_deliveries(
    request: &pb::ListDeliveriesRequest,
) -> Result<(DeliveryFilter, i64), ApiError> {
    let mut violations = Vec::new();
    let mut states = Vec::new();
    let mut unknown = Vec::new();
    for state in &request.states {
        match pb::DeliveryState::try_from(*state)
            .ok()
            .and_then(DeliveryState::from_proto)
        {
            Some(state) => states.push(state),
            None => unknown.push(*state),
        }
    }
    // One violation for all of them: one each would let a request of a few
    // megabytes make an error too large for any client to receive.
    if let Some(first) = unknown.first() {
        let description = match unknown.len() {
            1 => format!("{first} is not a delivery state"),
            n => format!("{first} and {} more are not delivery states", n - 1),
        };
        violations.push(("states", description));
    }
    let call_id = match request.call_id.trim() {
        "" => None,
        id => match Uuid::parse_str(id) {
            Ok(id) => Some(id),
            Err(_) => {
                violations.push(("call_id", "must be a UUID".to_owned()));
                None
            }
        },
    };
    let channel = match pb::Channel::try_from(request.channel) {
        Ok(pb::Channel::Unspecified) => None,
        Ok(pb::Channel::Email) => Some(Channel::Email),
        Ok(pb::Channel::InApp) => Some(Channel::InApp),
        Err(_) => {
            violations.push(("channel", "unknown channel".to_owned()));
            None
        }
    };
    let limit = page_size(
        request.page_size,
        DEFAULT_DELIVERY_PAGE,
        MAX_DELIVERY_PAGE,
        "page_size",
    );
    let before = parse_token(&request.page_token, 'd');
    let (limit, before) = match (limit, before) {
        (Ok(limit), Ok(before)) if violations.is_empty() => (limit, before),
        (limit, before) => {
            let mut all: Vec<crate::error::Violation> = violations
                .into_iter()
                .map(|(field, description)| crate::error::Violation {
                    field: field.to_owned(),
                    description,
                })
                .collect();
            for error in [limit.err(), before.err()].into_iter().flatten() {
                if let ApiError::InvalidArgument(more) = error {
                    all.extend(more);
                }
            }
            return Err(ApiError::InvalidArgument(all));
        }
    };
    let filter = DeliveryFilter {
        states,
        call_id,
        recipient_id: Some(request.recipient_id.trim().to_owned()).filter(|r| !r.is_empty()),
        channel,
        before,
        limit: limit + 1,
    };
    Ok((filter, limit))
}

/// `RetryDeadLetters`: the deliveries to retry, `None` for every dead one.
pub fn validate_retry_dead_letters(
    request: &pb::RetryDeadLettersRequest,
) -> Result<Option<Vec<i64>>, ApiError> {
    if request.delivery_ids.is_empty() {
        return Ok(None);
    }
    request
        .delivery_ids
        .iter()
        .map(|id| i64::try_from(*id))
        .collect::<Result<_, _>>()
        .map(Some)
        .map_err(|_| ApiError::invalid("delivery_ids", "out of range"))
}

#[tonic::async_trait]
impl pb::notification_service_server::NotificationService for NotificationApi {
    #[tracing::instrument(name = "ListNotifications", skip_all)]
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let caller = self.ctx.principal(&request)?;
        let request = request.into_inner();
        let (limit, before) = validate_list_notifications(&request)?;
        let rows = store::list_notifications(
            &self.ctx.pool,
            &caller.user_id,
            request.unread_only,
            before,
            limit + 1,
        )
        .await
        .map_err(ApiError::from)?;
        let more = rows.len() as i64 > limit;
        let notifications: Vec<pb::Notification> = rows
            .iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(store::NotificationRow::to_proto)
            .collect();
        let next_page_token = match notifications.last() {
            Some(last) if more => format!("n{}", last.sequence),
            _ => String::new(),
        };
        let unread = store::unread_count(&self.ctx.pool, &caller.user_id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications,
            next_page_token,
            unread_count: u64::try_from(unread).unwrap_or(0),
        }))
    }

    #[tracing::instrument(name = "MarkRead", skip_all)]
    async fn mark_read(
        &self,
        request: Request<pb::MarkReadRequest>,
    ) -> Result<Response<pb::MarkReadResponse>, Status> {
        let caller = self.ctx.principal(&request)?;
        let request = request.into_inner();
        let ids = validate_mark_read(&request)?;
        let marked = store::mark_read(&self.ctx.pool, &caller.user_id, ids.as_deref())
            .await
            .map_err(ApiError::from)?;
        let unread = store::unread_count(&self.ctx.pool, &caller.user_id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::MarkReadResponse {
            marked,
            unread_count: u64::try_from(unread).unwrap_or(0),
        }))
    }

    type WatchNotificationsStream = WatchStream;

    #[tracing::instrument(name = "WatchNotifications", skip_all)]
    async fn watch_notifications(
        &self,
        request: Request<pb::WatchNotificationsRequest>,
    ) -> Result<Response<Self::WatchNotificationsStream>, Status> {
        let caller = self.ctx.principal(&request)?;
        let request = request.into_inner();
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        let ctx = &self.ctx;
        ctx.tasks.spawn(live::watch(
            ctx.pool.clone(),
            ctx.hub.clone(),
            caller.user_id,
            request.after_sequence,
            ctx.watch_poll,
            sender,
            ctx.shutdown.clone(),
        ));
        let stream = futures::StreamExt::map(ReceiverStream::new(receiver), |item| {
            item.map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

pub struct DeliveryApi {
    ctx: Arc<Shared>,
}

impl DeliveryApi {
    pub fn new(ctx: Arc<Shared>) -> Self {
        Self { ctx }
    }

    fn operator<T>(&self, request: &Request<T>, what: &str) -> Result<Principal, ApiError> {
        let caller = self.ctx.principal(request)?;
        if matches!(caller.role, Role::Admin | Role::Service) {
            Ok(caller)
        } else {
            Err(ApiError::PermissionDenied(format!(
                "{what} needs role admin or service; the token's role is {}",
                caller.role.as_str()
            )))
        }
    }
}

#[tonic::async_trait]
impl pb::delivery_service_server::DeliveryService for DeliveryApi {
    #[tracing::instrument(name = "ListDeliveries", skip_all)]
    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        self.operator(&request, "ListDeliveries")?;
        let request = request.into_inner();
        let (filter, limit) = validate_list_deliveries(&request)?;
        let rows = store::list_deliveries(&self.ctx.pool, &filter)
            .await
            .map_err(ApiError::from)?;
        let more = rows.len() as i64 > limit;
        let deliveries: Vec<pb::Delivery> = rows
            .iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(store::DeliveryRow::to_proto)
            .collect();
        let next_page_token = match deliveries.last() {
            Some(last) if more => format!("d{}", last.delivery_id),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries,
            next_page_token,
        }))
    }

    #[tracing::instrument(name = "RetryDeadLetters", skip_all)]
    async fn retry_dead_letters(
        &self,
        request: Request<pb::RetryDeadLettersRequest>,
    ) -> Result<Response<pb::RetryDeadLettersResponse>, Status> {
        let caller = self.operator(&request, "RetryDeadLetters")?;
        let request = request.into_inner();
        let ids = validate_retry_dead_letters(&request)?;
        let retried = store::retry_dead(&self.ctx.pool, ids.as_deref())
            .await
            .map_err(ApiError::from)?;
        tracing::info!(retried, by = %caller.user_id, "dead letters queued again");
        if retried > 0 {
            self.ctx.wake.notify_one();
        }
        Ok(Response::new(pb::RetryDeadLettersResponse { retried }))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Found by the `notification_service` fuzz target (`crash-f9d379f4…`): `[rpc, zone]`
    /// then a ListDeliveriesRequest with dozens of unknown states. Each was
    /// a violation of its own, and the error outgrew what a client accepts
    /// in trailers (16 KiB by default) at a few hundred.
    const MANY_UNKNOWN_STATES: &[u8] = &[
        0x03, 0x00, 0x0a, 0x43, 0x2f, 0x00, 0x63, 0x12, 0x21, 0x30, 0x31, 0x39, 0x32, 0x66, 0x30,
        0x69, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x24, 0xcd, 0x1e, 0x00, 0x01, 0x00, 0x00, 0x00, 0x20,
        0x00, 0x00, 0x40, 0x00, 0x0a, 0x24, 0x30, 0x1e, 0x00, 0x19, 0x19, 0x19, 0x19, 0xff, 0xff,
        0x62, 0x34, 0x65, 0x2d, 0x37, 0x33, 0x62, 0x34, 0x63, 0x35, 0x64, 0x36, 0x65, 0x1a, 0x05,
        0x73, 0x01, 0x00, 0x00, 0x00, 0x74, 0x75, 0x2d, 0x31, 0x1a, 0x01, 0x28, 0x64, 0x32, 0x02,
        0x64, 0x37,
    ];

    #[test]
    fn unknown_states_make_one_violation_however_many() {
        let mut message = pb::ListDeliveriesRequest::decode(&MANY_UNKNOWN_STATES[2..]).unwrap();
        message.states.extend(std::iter::repeat_n(99, 100_000));
        let Err(ApiError::InvalidArgument(violations)) = validate_list_deliveries(&message) else {
            panic!("expected INVALID_ARGUMENT");
        };
        let states: Vec<_> = violations.iter().filter(|v| v.field == "states").collect();
        assert_eq!(states.len(), 1, "{states:?}");
        assert!(
            states[0]
                .description
                .contains("more are not delivery states")
        );
        let status = Status::from(ApiError::InvalidArgument(violations));
        assert!(status.message().len() < 1_000, "{}", status.message());
    }
}
