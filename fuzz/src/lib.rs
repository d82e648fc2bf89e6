//! What the fuzz targets in `fuzz_targets/` run, one function per target,
//! and what they share: how an input picks an RPC, what a clean validation
//! error is, and the seed inputs libFuzzer starts from.
//!
//! A request target reads its input as `[rpc, zone, protobuf…]`: the first
//! byte picks the RPC, the second the caller's profile zone (what a local
//! time without a zone is read in), and the rest is decoded as that RPC's
//! request message. Bytes that are not a valid encoding are what the gRPC
//! layer itself rejects, so they end the run quietly. Every validation step
//! of the handler then runs on the message (each one, whatever the previous
//! one said, since they are pure), and an error must be a clean validation
//! error: `INVALID_ARGUMENT` with a message, small enough to reach a client.

use std::fmt::Debug;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use prost::Message;
use tonic::{Code, Status};

pub mod local_time;
pub mod notifications;
pub mod scheduling;
pub mod seeds;

/// The most a status may take in an answer's trailers. Clients refuse
/// header lists over 16 KiB by default (hyper, and so tonic); this leaves
/// room for the other headers.
pub const MAX_STATUS_HEADER_BYTES: usize = 8 * 1024;

/// The protobuf `Timestamp` range: 0001-01-01T00:00:00Z to
/// 9999-12-31T23:59:59.999999999Z.
pub const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
pub const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// Zones with something special: gaps and folds of an hour, half an hour
/// (Lord Howe), quarter-hour offsets (Kathmandu, Chatham), a skipped day
/// (Kiritimati, Apia), none at all (UTC).
pub const ZONES: [&str; 10] = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "Pacific/Kiritimati",
    "Pacific/Apia",
    "America/St_Johns",
    "UTC",
    "Mars/Olympus_Mons",
];

/// One request input: which RPC, the caller's zone, the encoded message.
pub struct Input<'a> {
    pub rpc: u8,
    pub caller_zone: Option<&'static str>,
    pub message: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn split(data: &'a [u8]) -> Option<Self> {
        let (&rpc, rest) = data.split_first()?;
        let (&zone, message) = rest.split_first()?;
        Some(Self {
            rpc,
            caller_zone: caller_zone(zone),
            message,
        })
    }

    /// The message as `M`, if the bytes are an encoding of one.
    pub fn decode<M: Message + Default>(&self) -> Option<M> {
        M::decode(self.message).ok()
    }
}

/// 0: no profile zone; then the [`ZONES`]; then any zone of the database.
pub fn caller_zone(selector: u8) -> Option<&'static str> {
    let i = usize::from(selector);
    match i {
        0 => None,
        i if i <= ZONES.len() => Some(ZONES[i - 1]),
        i => Some(chrono_tz::TZ_VARIANTS[i % chrono_tz::TZ_VARIANTS.len()].name()),
    }
}

/// `[rpc, zone]` followed by `message`, the layout [`Input::split`] reads.
pub fn frame(rpc: u8, zone: u8, message: &impl Message) -> Vec<u8> {
    let mut out = vec![rpc, zone];
    out.extend(message.encode_to_vec());
    out
}

/// Panics unless `status` is a clean validation error for `request`.
#[track_caller]
pub fn assert_clean(status: &Status, request: &dyn Debug) {
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "not a validation error: {status:?} for {request:?}"
    );
    assert!(
        !status.message().trim().is_empty(),
        "an error without a message for {request:?}"
    );
    let mut headers = tonic::codegen::http::HeaderMap::new();
    if let Err(bad) = status.add_header(&mut headers) {
        panic!("the status cannot be sent as headers: {bad:?} for {request:?}");
    }
    // RFC 9113 §6.5.2: each field counts its name, value and 32 octets.
    let size: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum();
    assert!(
        size <= MAX_STATUS_HEADER_BYTES,
        "the status takes {size} bytes of headers (at most {MAX_STATUS_HEADER_BYTES}): {:?}…",
        status.message().chars().take(300).collect::<String>()
    );
}

/// The value of a validation step, or `None` after checking its error.
#[track_caller]
pub fn check_scheduling<T>(
    result: Result<T, skileez_scheduling::error::ApiError>,
    request: &dyn Debug,
) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(error) => {
            assert_clean(&Status::from(error), request);
            None
        }
    }
}

/// [`check_scheduling`] for a step that reports one field violation.
#[track_caller]
pub fn check_violation<T>(
    result: Result<T, skileez_scheduling::error::Violation>,
    request: &dyn Debug,
) -> Option<T> {
    check_scheduling(
        result.map_err(|v| skileez_scheduling::error::ApiError::InvalidArgument(vec![v])),
        request,
    )
}

#[track_caller]
pub fn check_notifications<T>(
    result: Result<T, skileez_notifications::error::ApiError>,
    request: &dyn Debug,
) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(error) => {
            assert_clean(&Status::from(error), request);
            None
        }
    }
}

/// Panics unless an accepted instant is one a protobuf `Timestamp` can
/// carry back to a client (and so one the handlers' arithmetic is safe on).
#[track_caller]
pub fn assert_timestamp(at: DateTime<Utc>, request: &dyn Debug) {
    let ts = skileez_scheduling::mapping::timestamp(at);
    assert!(
        (MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&ts.seconds)
            && (0..1_000_000_000).contains(&ts.nanos),
        "accepted {at:?}, which is no valid Timestamp ({ts:?}), from {request:?}"
    );
}

/// Every zone of the compiled database, by index.
pub fn any_zone(index: u16) -> Tz {
    chrono_tz::TZ_VARIANTS[usize::from(index) % chrono_tz::TZ_VARIANTS.len()]
}

/// Writes `seeds` as `seed-N` files into `$SKILEEZ_FUZZ_SEEDS` when it is
/// set (`fuzz/run.sh` sets it to the target's corpus), so that libFuzzer
/// starts from well-formed requests of every RPC rather than from nothing.
pub fn write_seeds(seeds: Vec<Vec<u8>>) {
    let Some(dir) = std::env::var_os("SKILEEZ_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    if let Err(error) = std::fs::create_dir_all(&dir) {
        eprintln!("seeds: cannot create {}: {error}", dir.display());
        return;
    }
    for (i, seed) in seeds.iter().enumerate() {
        let path = dir.join(format!("seed-{i:03}"));
        if let Err(error) = std::fs::write(&path, seed) {
            eprintln!("seeds: cannot write {}: {error}", path.display());
        }
    }
}
