//! Browsers call the gRPC ports through gRPC-Web (HTTP/1.1 POST of
//! `application/grpc-web+proto`, 5-byte frames, trailers in the body), with
//! CORS for the configured origins only: the notifications port and the
//! scheduling port alike.

mod support;

use std::time::Duration;

use prost::Message as _;
use skileez_domain::ActorRole;
use skileez_proto::notifications as pbn;
use support::http::{self, frame, frames};
use support::*;

const LIST: &str = "/skileez.notifications.v1.NotificationService/ListNotifications";
const HEALTH: &str = "/grpc.health.v1.Health/Check";

fn grpc_web_headers<'a>(token: &'a str, origin: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("Content-Type", "application/grpc-web+proto"),
        ("X-Grpc-Web", "1"),
        ("X-User-Agent", "grpc-web-javascript/0.1"),
        ("Authorization", token),
        ("Origin", origin),
    ]
}

fn preflight_headers(origin: &str) -> Vec<(&str, &str)> {
    vec![
        ("Origin", origin),
        ("Access-Control-Request-Method", "POST"),
        (
            "Access-Control-Request-Headers",
            "authorization,content-type,x-grpc-web,x-user-agent",
        ),
    ]
}

/// `grpc-status`, from the headers (a trailers-only answer) or from the
/// trailers frame.
fn grpc_status(response: &http::HttpResponse) -> Option<String> {
    if let Some(status) = response.header("grpc-status") {
        return Some(status.to_owned());
    }
    frames(&response.body)
        .into_iter()
        .filter(|(flag, _)| flag & 0x80 != 0)
        .flat_map(|(_, trailers)| {
            String::from_utf8_lossy(&trailers)
                .split("\r\n")
                .filter_map(|line| line.split_once(':'))
                .filter(|(name, _)| name.trim().eq_ignore_ascii_case("grpc-status"))
                .map(|(_, value)| value.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .next()
}

#[tokio::test]
async fn a_browser_lists_notifications_over_grpc_web_from_an_allowed_origin() {
    let env = TestEnv::start().await;
    env.add_participant("stu-1", "Asha", "UTC", "en-GB").await;
    env.add_participant("coach-1", "Bo", "UTC", "en-GB").await;
    env.book_free("stu-1", "coach-1", day_at(2, 9, 0)).await;
    env.smtp.wait_for(2, Duration::from_secs(20)).await;
    let addr = env.instances[0].addr;

    // The preflight a browser sends before the call.
    let preflight = http::request(addr, "OPTIONS", LIST, &preflight_headers(APP_ORIGIN), b"").await;
    assert_eq!(preflight.status, 200, "{preflight:?}");
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some(APP_ORIGIN)
    );
    assert!(
        preflight
            .header("access-control-allow-methods")
            .unwrap_or_default()
            .contains("POST")
    );
    let allowed = preflight
        .header("access-control-allow-headers")
        .unwrap_or_default();
    for header in [
        "authorization",
        "content-type",
        "x-grpc-web",
        "x-user-agent",
    ] {
        assert!(allowed.contains(header), "{header} not in {allowed:?}");
    }
    assert_eq!(preflight.header("access-control-max-age"), Some("86400"));

    // The call itself: one message frame, then the trailers frame.
    let bearer = format!("Bearer {}", env.token("stu-1", ActorRole::Student));
    let request = pbn::ListNotificationsRequest {
        page_size: 10,
        ..Default::default()
    };
    let response = http::request(
        addr,
        "POST",
        LIST,
        &grpc_web_headers(&bearer, APP_ORIGIN),
        &frame(0, &request.encode_to_vec()),
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        response
            .header("content-type")
            .unwrap_or_default()
            .starts_with("application/grpc-web"),
        "{response:?}"
    );
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some(APP_ORIGIN)
    );
    assert!(
        response
            .header("access-control-expose-headers")
            .unwrap_or_default()
            .contains("grpc-status")
    );
    let body = frames(&response.body);
    assert_eq!(body.len(), 2, "{body:?}");
    assert_eq!(body[0].0, 0);
    let listed = pbn::ListNotificationsResponse::decode(body[0].1.as_slice()).expect("a response");
    assert_eq!(listed.notifications.len(), 1);
    assert_eq!(listed.notifications[0].user_id, "stu-1");
    assert_eq!(listed.unread_count, 1);
    assert_eq!(body[1].0, 0x80);
    assert_eq!(grpc_status(&response).as_deref(), Some("0"));

    // Without a token: the gRPC error, readable by the page.
    let no_token: Vec<(&str, &str)> = grpc_web_headers("", APP_ORIGIN)
        .into_iter()
        .filter(|(name, _)| *name != "Authorization")
        .collect();
    let response = http::request(
        addr,
        "POST",
        LIST,
        &no_token,
        &frame(0, &request.encode_to_vec()),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        grpc_status(&response).as_deref(),
        Some("16"),
        "{response:?}"
    );

    // Another origin gets no CORS answer: the browser keeps the response
    // from the page.
    let evil = http::request(
        addr,
        "OPTIONS",
        LIST,
        &preflight_headers("https://evil.test"),
        b"",
    )
    .await;
    assert_eq!(evil.header("access-control-allow-origin"), None, "{evil:?}");

    // Scheduling's port speaks gRPC-Web with the same CORS.
    let scheduling = env.scheduling.addr;
    let preflight = http::request(
        scheduling,
        "OPTIONS",
        HEALTH,
        &preflight_headers(APP_ORIGIN),
        b"",
    )
    .await;
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some(APP_ORIGIN),
        "{preflight:?}"
    );
    let response = http::request(
        scheduling,
        "POST",
        HEALTH,
        &grpc_web_headers(&bearer, APP_ORIGIN),
        &frame(0, &[]),
    )
    .await;
    let body = frames(&response.body);
    // HealthCheckResponse { status: SERVING (1) }
    assert_eq!(
        body.first().map(|f| f.1.clone()),
        Some(vec![0x08, 0x01]),
        "{response:?}"
    );

    // With no origins configured, gRPC-Web still works, with no CORS
    // headers at all.
    let closed = env
        .start_instance_with(&[("SKILEEZ_CORS_ORIGINS", "")])
        .await;
    let preflight = http::request(
        closed.addr,
        "OPTIONS",
        LIST,
        &preflight_headers(APP_ORIGIN),
        b"",
    )
    .await;
    assert!(!preflight.has_cors_headers(), "{preflight:?}");
    let response = http::request(
        closed.addr,
        "POST",
        LIST,
        &grpc_web_headers(&bearer, APP_ORIGIN),
        &frame(0, &request.encode_to_vec()),
    )
    .await;
    assert!(!response.has_cors_headers(), "{response:?}");
    let body = frames(&response.body);
    let listed = pbn::ListNotificationsResponse::decode(body[0].1.as_slice()).expect("a response");
    assert_eq!(listed.notifications.len(), 1);
    closed.stop().await;
}
