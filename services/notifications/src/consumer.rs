//! The call-event consumer: from each event, the notifications of SPEC §4
//! and the live feed items (`feed`) for both participants, recorded in one
//! transaction.
//!
//! For every event, in the transaction:
//!
//! 1. `inbox::claim` (a redelivered event stops here) and `inbox::advance`
//!    (the events of one call are applied in version order across
//!    instances; one that arrives ahead of its predecessor is retried);
//! 2. the call's newest card into `notification_calls`;
//! 3. per recipient (in user-id order, so two transactions never take the
//!    per-user counters crosswise): the call's feed item (a new call, a
//!    change, a ready-to-join alert), then, for the moment the event stands
//!    for, the in-app notification with its feed item and its delivery row
//!    (`sent`, or `stale`), and the e-mail rendered into a `pending`
//!    delivery row (or `skipped` / `stale` with the reason). The unique
//!    (call, kind, recipient, channel) key is the last guard against
//!    duplicate notifications; the inbox claim guards the feed.
//!
//! After the commit, the new in-app notifications and feed items are
//! published on core NATS for the live watchers and the delivery worker is
//! woken. The e-mail goes out from the worker, never from here: no
//! transaction is held across SMTP.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use lettre::message::Mailbox;
use prost::Message as _;
use skileez_bus::inbox::{self, Order};
use skileez_bus::{Bus, Delivery, Handler, HandlerError, async_trait};
use skileez_proto::call as ev;
use skileez_proto::notifications as pb;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::cards::Cards;
use crate::convert::to_utc;
use crate::feed::{self, FeedItem, FeedKind};
use crate::invite::{Invite, Party};
use crate::live;
use crate::mail::{self, Email};
use crate::model::{
    CallView, Channel, DeliveryState, InviteMethod, NotificationKind, invite_sequence, invite_uid,
    moment_of, staleness,
};
use crate::render::{Facts, Other, Recipient, Renderer, Role};
use crate::store::{self, NewDelivery, NewNotification, Participant};

/// The durable consumer's name, shared by every instance.
pub const CONSUMER: &str = "notifications";

/// Turns call events into notifications.
pub struct EventHandler {
    pub pool: PgPool,
    pub bus: Bus,
    pub renderer: Arc<Renderer>,
    pub from: Mailbox,
    pub message_id_domain: String,
    pub cards: Cards,
    /// Wakes the delivery worker.
    pub wake: Arc<Notify>,
}

/// What handling an event did, for the caller's after-commit work.
#[derive(Debug, Default)]
pub struct Applied {
    /// New in-app notifications, to publish.
    pub notifications: Vec<pb::Notification>,
    /// New live feed items, to publish.
    pub feed: Vec<FeedItem>,
    /// New e-mails waiting for the worker.
    pub emails: usize,
    /// (channel, kind, state) of every delivery recorded, for the metrics.
    pub recorded: Vec<(Channel, NotificationKind, DeliveryState)>,
}

#[async_trait]
impl Handler for EventHandler {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let event = ev::CallEvent::decode(delivery.payload.as_ref())
            .map_err(|e| HandlerError::Poison(format!("not a CallEvent: {e}")))?;
        let applied = self.apply(&event, Utc::now()).await?;
        let root = &self.bus.names().subject_root;
        live::publish(self.bus.client(), root, &applied.notifications).await;
        live::publish(self.bus.client(), root, &applied.feed).await;
        for (channel, kind, state) in applied.recorded {
            count(channel, kind, state);
        }
        if applied.emails > 0 {
            self.wake.notify_one();
        }
        Ok(())
    }
}

/// `skileez_notification_deliveries_total{channel, kind, outcome}`.
pub fn count(channel: Channel, kind: NotificationKind, state: DeliveryState) {
    metrics::counter!(
        "skileez_notification_deliveries_total",
        "channel" => channel.as_str(),
        "kind" => kind.as_str(),
        "outcome" => state.as_str(),
    )
    .increment(1);
}

/// The parts of an event every step needs, checked once.
struct Parsed<'a> {
    event_id: Uuid,
    call_id: Uuid,
    chain_id: Uuid,
    card: &'a ev::CallCard,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    occurred_at: DateTime<Utc>,
}

fn parse(event: &ev::CallEvent) -> Result<Parsed<'_>, HandlerError> {
    let poison = |what: &str| HandlerError::Poison(format!("CallEvent {}: {what}", event.event_id));
    let event_id =
        Uuid::parse_str(&event.event_id).map_err(|_| poison("event_id is not a UUID"))?;
    let call_id = Uuid::parse_str(&event.call_id).map_err(|_| poison("call_id is not a UUID"))?;
    let card = event.card.as_ref().ok_or_else(|| poison("no card"))?;
    let chain_id = Uuid::parse_str(&card.chain_id).unwrap_or(call_id);
    let start = card
        .start
        .as_ref()
        .and_then(to_utc)
        .ok_or_else(|| poison("the card has no start"))?;
    let end = card
        .end
        .as_ref()
        .and_then(to_utc)
        .unwrap_or(start + chrono::Duration::minutes(i64::from(card.duration_minutes)));
    let occurred_at = event.occurred_at.as_ref().and_then(to_utc).unwrap_or(start);
    if event.stream_version == 0 {
        return Err(poison("stream_version is 0"));
    }
    Ok(Parsed {
        event_id,
        call_id,
        chain_id,
        card,
        start,
        end,
        occurred_at,
    })
}

fn retry(error: sqlx::Error) -> HandlerError {
    HandlerError::Retry(format!("database: {error}"))
}

impl EventHandler {
    /// Records what `event` calls for (see the module docs), at `now`.
    #[tracing::instrument(skip_all, fields(call_id = %event.call_id, event_id = %event.event_id, version = event.stream_version))]
    pub async fn apply(
        &self,
        event: &ev::CallEvent,
        now: DateTime<Utc>,
    ) -> Result<Applied, HandlerError> {
        let parsed = parse(event)?;
        let kind = moment_of(event);
        // Read outside the transaction: no locks held across NATS.
        let bucket_view = match kind {
            Some(kind) if kind.can_go_stale() => self.cards.from_bucket(parsed.call_id).await,
            _ => None,
        };
        let mut tx = self.pool.begin().await.map_err(retry)?;
        if !inbox::claim(&mut tx, CONSUMER, parsed.event_id)
            .await
            .map_err(retry)?
        {
            tracing::debug!(event_id = %parsed.event_id, "event handled before; skipped");
            return Ok(Applied::default());
        }
        match inbox::advance(&mut tx, CONSUMER, &event.call_id, event.stream_version)
            .await
            .map_err(retry)?
        {
            Order::Next => {}
            Order::Stale => {
                tx.commit().await.map_err(retry)?;
                return Ok(Applied::default());
            }
            Order::Ahead { expected } => {
                return Err(HandlerError::Retry(format!(
                    "call {} version {} arrived before version {expected}",
                    event.call_id, event.stream_version
                )));
            }
        }
        let scheduled = match &event.event {
            Some(ev::call_event::Event::Scheduled(scheduled)) => Some(scheduled),
            _ => None,
        };
        let previous = match scheduled.filter(|s| !s.rescheduled_from.is_empty()) {
            Some(s) => match Uuid::parse_str(&s.rescheduled_from) {
                Ok(from) => store::call_row(&mut *tx, from).await.map_err(retry)?,
                Err(_) => None,
            },
            None => None,
        };
        store::record_call(
            &mut tx,
            parsed.call_id,
            parsed.chain_id,
            parsed.card,
            parsed.start,
            scheduled.map(|s| s.reschedule_count),
        )
        .await
        .map_err(retry)?;
        let mut applied = Applied::default();
        let stale = kind.and_then(|kind| {
            let view = CallView::newest(
                CallView::of_card(parsed.card)
                    .into_iter()
                    .chain(bucket_view),
            );
            view.and_then(|view| staleness(kind, &view, now))
        });
        let moment = kind.map(|kind| Moment {
            kind,
            event,
            parsed: &parsed,
            previous_start: previous.map(|p| p.starts_at),
            stale: stale.as_deref(),
        });
        let feed_kind = feed::call_item_kind(event, stale.is_some());
        self.record_for_both(
            &mut tx,
            event,
            &parsed,
            feed_kind,
            moment.as_ref(),
            &mut applied,
        )
        .await
        .map_err(retry)?;
        tx.commit().await.map_err(retry)?;
        Ok(applied)
    }

    /// For each participant, in user-id order (so two transactions never
    /// take the per-user counters crosswise): the call's feed item, then
    /// the moment's notifications (whose own feed item follows).
    async fn record_for_both(
        &self,
        tx: &mut PgConnection,
        event: &ev::CallEvent,
        parsed: &Parsed<'_>,
        feed_kind: Option<FeedKind>,
        moment: Option<&Moment<'_>>,
        applied: &mut Applied,
    ) -> Result<(), sqlx::Error> {
        let card = parsed.card;
        let student = person(card.student.as_ref(), Role::Student);
        let coach = person(card.coach.as_ref(), Role::Coach);
        let directory = match moment {
            Some(_) => {
                let ids: Vec<&str> = [&student, &coach]
                    .iter()
                    .map(|p| p.user_id.as_str())
                    .filter(|id| !id.is_empty())
                    .collect();
                store::participants(tx, &ids).await?
            }
            None => HashMap::new(),
        };
        let body = feed_kind.map(|kind| {
            feed::call_body(
                kind,
                event,
                parsed.call_id,
                parsed.event_id,
                parsed.occurred_at,
                card,
            )
        });
        let mut pairs = [(&student, &coach), (&coach, &student)];
        pairs.sort_by(|a, b| a.0.user_id.cmp(&b.0.user_id));
        for (me, them) in pairs {
            if me.user_id.is_empty() {
                continue;
            }
            if let (Some(kind), Some(body)) = (feed_kind, body.as_ref()) {
                let item = store::insert_feed_item(
                    tx,
                    &me.user_id,
                    kind,
                    parsed.call_id,
                    parsed.event_id,
                    body,
                )
                .await?;
                applied.feed.push(item);
            }
            if let Some(moment) = moment {
                self.notify_one(tx, moment, me, them, &directory, applied)
                    .await?;
            }
        }
        Ok(())
    }

    async fn notify_one(
        &self,
        tx: &mut PgConnection,
        moment: &Moment<'_>,
        me: &Person,
        them: &Person,
        directory: &HashMap<String, Participant>,
        applied: &mut Applied,
    ) -> Result<(), sqlx::Error> {
        let kind = moment.kind;
        let parsed = moment.parsed;
        let entry = directory.get(&me.user_id);
        let zone: Tz = entry
            .and_then(|p| p.time_zone.parse().ok())
            .unwrap_or(chrono_tz::UTC);
        let recipient = Recipient {
            user_id: me.user_id.clone(),
            name: entry
                .map(|p| p.display_name.clone())
                .filter(|n| !n.is_empty())
                .or_else(|| Some(me.name.clone()).filter(|n| !n.is_empty()))
                .unwrap_or_else(|| "there".to_owned()),
            zone,
            locale: entry
                .map(|p| p.locale.clone())
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| "en".to_owned()),
            role: me.role,
        };
        let other = Other {
            user_id: them.user_id.clone(),
            name: directory
                .get(&them.user_id)
                .map(|p| p.display_name.clone())
                .filter(|n| !n.is_empty())
                .or_else(|| Some(them.name.clone()).filter(|n| !n.is_empty()))
                .unwrap_or_else(|| match them.role {
                    Role::Coach => "your coach".to_owned(),
                    Role::Student => "your student".to_owned(),
                }),
        };
        let rendered = self
            .renderer
            .render(&moment.facts(), &recipient, &other)
            .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        let trace = skileez_telemetry::propagation::current();
        let base = NewDelivery {
            call_id: parsed.call_id,
            chain_id: parsed.chain_id,
            kind,
            recipient_id: &me.user_id,
            channel: Channel::InApp,
            state: DeliveryState::Sent,
            address: None,
            message_id: None,
            invite_method: None,
            invite_sequence: None,
            message: None,
            note: None,
            event_id: parsed.event_id,
            traceparent: trace.as_ref().map(|t| t.traceparent.as_str()),
            tracestate: trace
                .as_ref()
                .map(|t| t.tracestate.as_str())
                .filter(|s| !s.is_empty()),
        };

        // In the app.
        if !store::delivery_exists(tx, parsed.call_id, kind, &me.user_id, Channel::InApp).await? {
            let state = if moment.stale.is_some() {
                DeliveryState::Stale
            } else {
                let row = store::insert_notification(
                    tx,
                    &NewNotification {
                        user_id: &me.user_id,
                        call_id: parsed.call_id,
                        chain_id: parsed.chain_id,
                        kind,
                        title: &rendered.title,
                        body: &rendered.body,
                        card: parsed.card,
                        event_id: parsed.event_id,
                    },
                )
                .await?;
                let notification = row.to_proto();
                let item = store::insert_feed_item(
                    tx,
                    &me.user_id,
                    FeedKind::Notification,
                    parsed.call_id,
                    parsed.event_id,
                    &feed::notification_body(&notification, parsed.event_id),
                )
                .await?;
                applied.feed.push(item);
                applied.notifications.push(notification);
                DeliveryState::Sent
            };
            store::insert_delivery(
                tx,
                &NewDelivery {
                    state,
                    note: moment.stale,
                    ..base.clone()
                },
            )
            .await?;
            applied.recorded.push((Channel::InApp, kind, state));
        }

        // By e-mail.
        if !kind.has_email()
            || store::delivery_exists(tx, parsed.call_id, kind, &me.user_id, Channel::Email).await?
        {
            return Ok(());
        }
        let email = NewDelivery {
            channel: Channel::Email,
            ..base
        };
        let not_sent = |state, note: &str| (state, note.to_owned());
        let skip = if let Some(reason) = moment.stale {
            Some(not_sent(DeliveryState::Stale, reason))
        } else {
            match entry {
                None => Some(not_sent(
                    DeliveryState::Skipped,
                    "skipped: the participant is not in the directory",
                )),
                Some(p) if !p.email_enabled => Some(not_sent(
                    DeliveryState::Skipped,
                    "skipped: the participant turned e-mail off",
                )),
                Some(p) if p.email.trim().is_empty() => Some(not_sent(
                    DeliveryState::Skipped,
                    "skipped: the participant has no e-mail address",
                )),
                Some(_) => None,
            }
        };
        if let Some((state, note)) = skip {
            store::insert_delivery(
                tx,
                &NewDelivery {
                    state,
                    note: Some(&note),
                    ..email
                },
            )
            .await?;
            applied.recorded.push((Channel::Email, kind, state));
            return Ok(());
        }
        let Some(participant) = entry else {
            return Ok(());
        };
        let address = participant.email.trim();
        let invite = match kind.invite() {
            Some(method) => {
                let sequence = self.sequence(tx, moment, method, &me.user_id).await?;
                Some(self.invite(
                    moment,
                    method,
                    sequence,
                    &rendered.body,
                    &recipient,
                    &other,
                    directory,
                    me,
                    them,
                ))
            }
            None => None,
        };
        let message_id = mail::message_id(
            &parsed.call_id.to_string(),
            kind,
            &me.user_id,
            &self.message_id_domain,
        );
        let composed = mail::compose(&Email {
            from: &self.from,
            to_name: &recipient.name,
            to_address: address,
            message_id: message_id.clone(),
            rendered: &rendered,
            invite: invite.as_ref(),
        });
        let (state, note, message) = match &composed {
            Ok(composed) => (
                DeliveryState::Pending,
                None,
                Some(composed.bytes.as_slice()),
            ),
            Err(error) => (
                DeliveryState::Skipped,
                Some(format!("skipped: {error}")),
                None,
            ),
        };
        store::insert_delivery(
            tx,
            &NewDelivery {
                state,
                address: Some(address),
                message_id: Some(&message_id),
                invite_method: invite.as_ref().map(|i| i.method.as_str()),
                invite_sequence: invite.as_ref().map(|i| i.sequence),
                message,
                note: note.as_deref(),
                ..email
            },
        )
        .await?;
        applied.recorded.push((Channel::Email, kind, state));
        if state == DeliveryState::Pending {
            applied.emails += 1;
        }
        Ok(())
    }

    /// The invite's SEQUENCE (see `model::invite_sequence`): a REQUEST's from
    /// the event; a CANCEL's from the reschedule count recorded with the
    /// call's CallScheduled, and never below one more than what the chain
    /// already sent this recipient.
    async fn sequence(
        &self,
        tx: &mut PgConnection,
        moment: &Moment<'_>,
        method: InviteMethod,
        recipient_id: &str,
    ) -> Result<u32, sqlx::Error> {
        let parsed = moment.parsed;
        let reschedule_count = match &moment.event.event {
            Some(ev::call_event::Event::Scheduled(s)) => s.reschedule_count,
            _ => store::call_row(&mut *tx, parsed.call_id)
                .await?
                .map(|row| u32::try_from(row.reschedule_count).unwrap_or(0))
                .unwrap_or(0),
        };
        let sequence = invite_sequence(method, reschedule_count);
        if method == InviteMethod::Cancel {
            let sent = store::max_invite_sequence(tx, parsed.chain_id, recipient_id).await?;
            return Ok(sent.map_or(sequence, |sent| sequence.max(sent.saturating_add(1))));
        }
        Ok(sequence)
    }

    #[allow(clippy::too_many_arguments)]
    fn invite(
        &self,
        moment: &Moment<'_>,
        method: InviteMethod,
        sequence: u32,
        description: &str,
        recipient: &Recipient,
        other: &Other,
        directory: &HashMap<String, Participant>,
        me: &Person,
        them: &Person,
    ) -> Invite {
        let parsed = moment.parsed;
        let attendee = |person: &Person, name: &str| {
            directory
                .get(&person.user_id)
                .filter(|p| !p.email.trim().is_empty())
                .map(|p| Party {
                    name: name.to_owned(),
                    email: p.email.trim().to_owned(),
                })
        };
        let mut attendees: Vec<Party> =
            [(me, recipient.name.as_str()), (them, other.name.as_str())]
                .into_iter()
                .filter_map(|(person, name)| attendee(person, name))
                .collect();
        attendees.sort_by(|a, b| a.email.cmp(&b.email));
        let label = match ev::CallKind::try_from(parsed.card.kind) {
            Ok(ev::CallKind::PaidSession) => "Session",
            Ok(ev::CallKind::FreeConsultation) => "Free consultation",
            _ => "Call",
        };
        Invite {
            method,
            uid: invite_uid(&parsed.chain_id.to_string()),
            sequence,
            stamp: parsed.occurred_at,
            start: parsed.start,
            end: parsed.end,
            summary: format!("Skileez: {label} with {}", other.name),
            description: description.to_owned(),
            organizer: Party {
                name: self
                    .from
                    .name
                    .clone()
                    .unwrap_or_else(|| "Skileez".to_owned()),
                email: self.from.email.to_string(),
            },
            attendees,
        }
    }
}

/// One moment of one call, as the consumer sees it.
struct Moment<'a> {
    kind: NotificationKind,
    event: &'a ev::CallEvent,
    parsed: &'a Parsed<'a>,
    previous_start: Option<DateTime<Utc>>,
    /// Why it is stale, if it is.
    stale: Option<&'a str>,
}

impl Moment<'_> {
    fn facts(&self) -> Facts {
        let card = self.parsed.card;
        let (reason, attendance) = match &self.event.event {
            Some(ev::call_event::Event::Cancelled(c)) => {
                (Some(c.reason.clone()).filter(|r| !r.is_empty()), None)
            }
            Some(ev::call_event::Event::Ended(e)) => {
                (None, ev::Attendance::try_from(e.attendance).ok())
            }
            Some(ev::call_event::Event::Missed(m)) => {
                (None, ev::Attendance::try_from(m.attendance).ok())
            }
            _ => (None, None),
        };
        Facts {
            kind: self.kind,
            call_kind: ev::CallKind::try_from(card.kind).unwrap_or(ev::CallKind::Unspecified),
            start: self.parsed.start,
            end: self.parsed.end,
            duration_minutes: card.duration_minutes,
            previous_start: self.previous_start,
            reason,
            actor_id: self.event.actor.as_ref().map(|a| a.user_id.clone()),
            attendance: attendance.filter(|a| *a != ev::Attendance::Unspecified),
        }
    }
}

/// A participant as the card names them.
struct Person {
    user_id: String,
    name: String,
    role: Role,
}

fn person(person: Option<&ev::Person>, role: Role) -> Person {
    Person {
        user_id: person.map(|p| p.user_id.clone()).unwrap_or_default(),
        name: person.map(|p| p.display_name.clone()).unwrap_or_default(),
        role,
    }
}
