//! The notification service's target: every RPC of `NotificationService`
//! and `DeliveryService`, through the validation steps of its handler
//! (`services/notifications/src/api.rs`).

use skileez_notifications::api;
use skileez_proto::notifications as pb;

use crate::{Input, check_notifications as check};

pub fn notification_service(data: &[u8]) {
    let Some(input) = Input::split(data) else {
        return;
    };
    match input.rpc % 5 {
        0 => {
            let Some(m) = input.decode::<pb::ListNotificationsRequest>() else {
                return;
            };
            if let Some((limit, before)) = check(api::validate_list_notifications(&m), &m) {
                assert!((1..=200).contains(&limit));
                assert!(before.is_none_or(|b| b > 0));
            }
        }
        1 => {
            let Some(m) = input.decode::<pb::MarkReadRequest>() else {
                return;
            };
            if let Some(Some(ids)) = check(api::validate_mark_read(&m), &m) {
                assert!(!ids.is_empty() && ids.len() <= 1000);
            }
        }
        2 => {
            // WatchNotifications takes any `after_sequence`: decoding is
            // all there is to it.
            let _ = input.decode::<pb::WatchNotificationsRequest>();
        }
        3 => {
            let Some(m) = input.decode::<pb::ListDeliveriesRequest>() else {
                return;
            };
            if let Some((filter, limit)) = check(api::validate_list_deliveries(&m), &m) {
                assert!((1..=500).contains(&limit));
                assert_eq!(filter.limit, limit + 1);
                assert!(filter.before.is_none_or(|b| b > 0));
            }
        }
        _ => {
            let Some(m) = input.decode::<pb::RetryDeadLettersRequest>() else {
                return;
            };
            if let Some(Some(ids)) = check(api::validate_retry_dead_letters(&m), &m) {
                assert!(ids.iter().all(|id| *id >= 0));
            }
        }
    }
}
