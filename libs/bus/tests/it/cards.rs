use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use crate::support::TestBus;

/// A card as the tests store it: its version, big-endian.
fn card(version: u64) -> Bytes {
    Bytes::copy_from_slice(&version.to_be_bytes())
}

fn version_of(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

async fn stored(t: &TestBus, key: &str) -> Option<u64> {
    let kv = t.bus.jetstream().get_key_value("CALL_CARDS").await.unwrap();
    kv.get(key).await.unwrap().and_then(|b| version_of(&b))
}

#[tokio::test]
async fn an_older_card_never_replaces_a_newer_one() {
    let t = TestBus::new().await;
    let put = |v: u64| t.bus.put_card_if_newer("call-1", card(v), v, version_of);

    assert!(put(2).await.unwrap(), "absent: written");
    assert!(!put(1).await.unwrap(), "older: refused");
    assert!(!put(2).await.unwrap(), "same version: nothing to do");
    assert_eq!(stored(&t, "call-1").await, Some(2));
    assert!(put(5).await.unwrap(), "newer: written");
    assert_eq!(stored(&t, "call-1").await, Some(5));
}

#[tokio::test]
async fn a_card_that_does_not_decode_or_was_deleted_is_replaced() {
    let t = TestBus::new().await;
    let kv = t.bus.jetstream().get_key_value("CALL_CARDS").await.unwrap();
    kv.put("garbled", Bytes::from_static(b"?")).await.unwrap();
    assert!(
        t.bus
            .put_card_if_newer("garbled", card(1), 1, version_of)
            .await
            .unwrap()
    );

    kv.put("deleted", card(9)).await.unwrap();
    kv.delete("deleted").await.unwrap();
    assert!(
        t.bus
            .put_card_if_newer("deleted", card(3), 3, version_of)
            .await
            .unwrap()
    );
    assert_eq!(stored(&t, "deleted").await, Some(3));
}

#[tokio::test]
async fn concurrent_writers_leave_the_newest_card() {
    let t = TestBus::new().await;
    // Every value the key takes, in order: they must only go up.
    let kv = t.bus.jetstream().get_key_value("CALL_CARDS").await.unwrap();
    let mut updates = kv.watch("call-a").await.unwrap();
    let watcher = tokio::spawn(async move {
        let mut history = Vec::new();
        while let Some(entry) = updates.next().await {
            let version = version_of(&entry.unwrap().value).unwrap();
            history.push(version);
            if version == 40 {
                return history;
            }
        }
        history
    });
    let mut writers = Vec::new();
    for writer in 0..6u64 {
        // Separate connections, so the writes really interleave.
        let bus = Arc::new(t.connect().await);
        writers.push(tokio::spawn(async move {
            // Every writer goes through all versions, each in its own order.
            let mut versions: Vec<u64> = (1..=40).collect();
            versions.rotate_left((writer * 7) as usize);
            if writer % 2 == 1 {
                versions.reverse();
            }
            for key in ["call-a", "call-b"] {
                for &v in &versions {
                    bus.put_card_if_newer(key, card(v), v, version_of)
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(stored(&t, "call-a").await, Some(40));
    assert_eq!(stored(&t, "call-b").await, Some(40));
    let history = tokio::time::timeout(std::time::Duration::from_secs(10), watcher)
        .await
        .unwrap()
        .unwrap();
    assert!(
        history.windows(2).all(|w| w[0] < w[1]),
        "the card went back: {history:?}"
    );
}
