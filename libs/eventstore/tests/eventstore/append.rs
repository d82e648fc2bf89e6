//! Appending: expected versions, atomicity, the unit of work, duplicates.

use std::time::Duration;

use skileez_eventstore::{ExpectedVersion, StoreError};
use sqlx::Connection;

use crate::support::{append, event, events, ids, store, to};

fn assert_conflict(
    result: Result<impl std::fmt::Debug, StoreError>,
    stream: &str,
    expected: ExpectedVersion,
    actual: Option<u64>,
) {
    match result {
        Err(StoreError::VersionConflict {
            stream_id,
            expected: e,
            actual: a,
        }) => {
            assert_eq!(
                (stream_id.as_str(), e, a),
                (stream, expected, actual),
                "conflict details"
            );
        }
        other => panic!("expected a version conflict on {stream}, got {other:?}"),
    }
}

#[tokio::test]
async fn appended_events_are_read_back_in_version_order() -> anyhow::Result<()> {
    let (_db, store) = store().await;

    let first = store
        .append(vec![to("call-1", ExpectedVersion::NoStream, events(2))])
        .await?;
    let pending = first.events().to_vec();
    let first = first.commit().await?;
    assert_eq!(
        first, pending,
        "commit returns the events the unit of work showed"
    );
    assert_eq!(first.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(
        first[0].tx_id, first[1].tx_id,
        "one append, one transaction"
    );
    assert!(first[0].position < first[1].position);

    let second = append(&store, "call-1", ExpectedVersion::Exact(2), 1).await?;
    assert_eq!(second[0].version, 3);
    assert!(second[0].feed_position() > first[1].feed_position());

    let stream = store.read_stream("call-1").await?;
    assert_eq!(
        stream.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(stream, [first, second].concat());
    assert_eq!(stream[0].event_type, "Event0");
    assert_eq!(stream[0].stream_type, "call");
    assert_eq!(stream[0].payload["kind"], "Event0");
    assert_eq!(stream[0].metadata["actor"], "test");
    assert_eq!(store.stream_version("call-1").await?, Some(3));
    Ok(())
}

#[tokio::test]
async fn an_unknown_stream_is_empty_and_has_no_version() -> anyhow::Result<()> {
    let (_db, store) = store().await;
    assert!(store.read_stream("nobody").await?.is_empty());
    assert_eq!(store.stream_version("nobody").await?, None);
    Ok(())
}

#[tokio::test]
async fn no_stream_on_an_existing_stream_is_a_conflict() -> anyhow::Result<()> {
    let (_db, store) = store().await;
    append(&store, "call-1", ExpectedVersion::NoStream, 2).await?;

    let result = append(&store, "call-1", ExpectedVersion::NoStream, 1).await;
    assert_conflict(result, "call-1", ExpectedVersion::NoStream, Some(2));
    let result = append(&store, "call-1", ExpectedVersion::Exact(0), 1).await;
    assert_conflict(result, "call-1", ExpectedVersion::Exact(0), Some(2));
    assert_eq!(store.stream_version("call-1").await?, Some(2));
    Ok(())
}

#[tokio::test]
async fn a_wrong_exact_version_is_a_conflict() -> anyhow::Result<()> {
    let (_db, store) = store().await;
    append(&store, "call-1", ExpectedVersion::NoStream, 2).await?;

    let behind = append(&store, "call-1", ExpectedVersion::Exact(1), 1).await;
    assert_conflict(behind, "call-1", ExpectedVersion::Exact(1), Some(2));
    let ahead = append(&store, "call-1", ExpectedVersion::Exact(3), 1).await;
    assert_conflict(ahead, "call-1", ExpectedVersion::Exact(3), Some(2));
    let missing = append(&store, "call-2", ExpectedVersion::Exact(1), 1).await;
    assert_conflict(missing, "call-2", ExpectedVersion::Exact(1), None);

    assert_eq!(store.read_stream("call-1").await?.len(), 2);
    assert_eq!(
        store.stream_version("call-2").await?,
        None,
        "a failed append must not create the stream"
    );
    Ok(())
}

#[tokio::test]
async fn a_version_taken_behind_the_stores_back_is_still_a_conflict() -> anyhow::Result<()> {
    let (db, store) = store().await;
    append(&store, "call-1", ExpectedVersion::NoStream, 1).await?;
    // A writer that skips the stream lock: only the unique constraint on
    // (stream_id, version) catches the clash.
    sqlx::query(
        "INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, payload, metadata)
         VALUES ($1, 'call-1', 'call', 2, 'Rogue', 1, '{}', '{}')",
    )
    .bind(uuid::Uuid::now_v7())
    .execute(db.pool())
    .await?;

    let result = append(&store, "call-1", ExpectedVersion::Exact(1), 1).await;
    assert_conflict(result, "call-1", ExpectedVersion::Exact(1), Some(2));
    Ok(())
}

#[tokio::test]
async fn any_appends_after_whatever_is_there() -> anyhow::Result<()> {
    let (_db, store) = store().await;
    let created = append(&store, "call-1", ExpectedVersion::Any, 2).await?;
    assert_eq!(
        created.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2]
    );
    let more = append(&store, "call-1", ExpectedVersion::Any, 1).await?;
    assert_eq!(more[0].version, 3);
    Ok(())
}

#[tokio::test]
async fn an_appender_that_waited_for_the_lock_sees_the_winner_and_conflicts() -> anyhow::Result<()>
{
    let (_db, store) = store().await;
    append(&store, "call-1", ExpectedVersion::NoStream, 1).await?;

    let winner = store
        .append(vec![to("call-1", ExpectedVersion::Exact(1), events(1))])
        .await?;
    let loser = tokio::spawn({
        let store = store.clone();
        async move { append(&store, "call-1", ExpectedVersion::Exact(1), 1).await }
    });
    // Give the loser time to block on the stream lock held by the winner.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !loser.is_finished(),
        "the second appender must wait for the lock"
    );
    winner.commit().await?;

    let result = loser.await?;
    match result {
        Err(StoreError::VersionConflict {
            expected, actual, ..
        }) => {
            assert_eq!((expected, actual), (ExpectedVersion::Exact(1), Some(2)));
        }
        Err(other) => panic!("expected a version conflict, got {other:?}"),
        Ok(events) => panic!("the second appender won as well: {events:?}"),
    }
    assert_eq!(store.stream_version("call-1").await?, Some(2));
    Ok(())
}

#[tokio::test]
async fn a_stream_only_locked_by_an_append_waits_for_it_both_ways() -> anyhow::Result<()> {
    let (_db, store) = store().await;
    let coach = ["coach-7".to_owned()];
    // A booking's transaction appends to its call and locks the coach.
    let booking = store
        .append_locking(
            vec![to("call-1", ExpectedVersion::NoStream, events(1))],
            &coach,
        )
        .await?;
    let change = tokio::spawn({
        let store = store.clone();
        async move { append(&store, "coach-7", ExpectedVersion::NoStream, 1).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !change.is_finished(),
        "an append to a locked stream waits for the locking transaction"
    );
    let booked = booking.commit().await?;
    let changed = change.await??;
    assert!(
        booked[0].tx_id < changed[0].tx_id,
        "feed order is the order the two were serialised in"
    );
    assert_eq!(store.stream_version("coach-7").await?, Some(1));

    // And the other way round: the lock waits for an append in flight, and
    // then sees it.
    let change = store
        .append(vec![to("coach-7", ExpectedVersion::Exact(1), events(1))])
        .await?;
    let waiter = tokio::spawn({
        let store = store.clone();
        async move {
            let booking = store
                .append_locking(
                    vec![to("call-2", ExpectedVersion::NoStream, events(1))],
                    &coach,
                )
                .await?;
            let version = store.stream_version("coach-7").await?;
            Ok::<_, StoreError>((version, booking.commit().await?))
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "the lock waits for the append");
    let changed = change.commit().await?;
    let (version, booked) = waiter.await??;
    assert_eq!(version, Some(2), "after the lock, the change is seen");
    assert!(changed[0].tx_id < booked[0].tx_id);
    Ok(())
}

#[tokio::test]
async fn of_concurrent_appenders_with_one_expected_version_exactly_one_wins() -> anyhow::Result<()>
{
    let (_db, store) = store().await;
    append(&store, "call-1", ExpectedVersion::NoStream, 1).await?;

    let start = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                append(&store, "call-1", ExpectedVersion::Exact(1), 1).await
            })
        })
        .collect();
    let mut wins = 0;
    for racer in racers {
        match racer.await? {
            Ok(_) => wins += 1,
            Err(StoreError::VersionConflict { actual, .. }) => assert_eq!(actual, Some(2)),
            Err(other) => panic!("expected a version conflict, got {other:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.stream_version("call-1").await?, Some(2));
    Ok(())
}

#[tokio::test]
async fn a_conflict_on_one_stream_rolls_back_the_others() -> anyhow::Result<()> {
    let (_db, store) = store().await;
    append(&store, "call-1", ExpectedVersion::NoStream, 1).await?;
    append(&store, "call-2", ExpectedVersion::NoStream, 1).await?;

    let result = store
        .append(vec![
            to("call-1", ExpectedVersion::Exact(1), events(1)),
            to("call-3", ExpectedVersion::NoStream, events(1)),
            to("call-2", ExpectedVersion::Exact(5), events(1)),
        ])
        .await;
    assert_conflict(result, "call-2", ExpectedVersion::Exact(5), Some(1));

    assert_eq!(store.stream_version("call-1").await?, Some(1));
    assert_eq!(store.read_stream("call-1").await?.len(), 1);
    assert_eq!(store.stream_version("call-3").await?, None);

    // The same append with the right version goes through, all streams at once.
    let uow = store
        .append(vec![
            to("call-1", ExpectedVersion::Exact(1), events(1)),
            to("call-3", ExpectedVersion::NoStream, events(2)),
            to("call-2", ExpectedVersion::Exact(1), events(1)),
        ])
        .await?;
    let committed = uow.commit().await?;
    let versions: Vec<_> = committed
        .iter()
        .map(|e| (e.stream_id.as_str(), e.version))
        .collect();
    assert_eq!(
        versions,
        [("call-1", 2), ("call-3", 1), ("call-3", 2), ("call-2", 2)],
        "positions follow the order of the append"
    );
    assert!(committed.iter().all(|e| e.tx_id == committed[0].tx_id));
    Ok(())
}

#[tokio::test]
async fn read_model_writes_commit_and_roll_back_with_the_events() -> anyhow::Result<()> {
    let (db, store) = store().await;
    sqlx::query("CREATE TABLE call_cards (call_id text PRIMARY KEY, state text NOT NULL)")
        .execute(db.pool())
        .await?;
    let card = |call_id: &'static str| {
        sqlx::query_scalar::<_, String>("SELECT state FROM call_cards WHERE call_id = $1")
            .bind(call_id)
            .fetch_optional(db.pool())
    };

    let mut uow = store
        .append(vec![to("call-1", ExpectedVersion::NoStream, events(1))])
        .await?;
    sqlx::query("INSERT INTO call_cards VALUES ('call-1', 'scheduled')")
        .execute(uow.conn())
        .await?;
    uow.commit().await?;
    assert_eq!(card("call-1").await?.as_deref(), Some("scheduled"));

    // Dropped without commit: neither the event nor the read model survive.
    let mut uow = store
        .append(vec![to("call-2", ExpectedVersion::NoStream, events(1))])
        .await?;
    sqlx::query("INSERT INTO call_cards VALUES ('call-2', 'scheduled')")
        .execute(uow.conn())
        .await?;
    drop(uow);
    assert_eq!(card("call-2").await?, None);
    assert_eq!(store.stream_version("call-2").await?, None);

    // A read-model write that violates a constraint: the caller sees the
    // SQLSTATE and the constraint, and the events go with the rollback.
    let mut uow = store
        .append(vec![to("call-1", ExpectedVersion::Exact(1), events(1))])
        .await?;
    let clash: StoreError = sqlx::query("INSERT INTO call_cards VALUES ('call-1', 'again')")
        .execute(uow.conn())
        .await
        .expect_err("duplicate key")
        .into();
    assert_eq!(clash.sqlstate().as_deref(), Some("23505"));
    assert_eq!(clash.constraint().as_deref(), Some("call_cards_pkey"));
    uow.rollback().await?;
    assert_eq!(store.stream_version("call-1").await?, Some(1));
    assert_eq!(store.read_stream("call-1").await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_reused_event_id_is_a_duplicate_event() -> anyhow::Result<()> {
    let (_db, store) = store().await;
    let stored = append(&store, "call-1", ExpectedVersion::NoStream, 1).await?;
    let reused = stored[0].event_id;

    let mut again = event("Again");
    again.event_id = reused;
    let result = store
        .append(vec![to(
            "call-2",
            ExpectedVersion::NoStream,
            vec![event("New"), again],
        )])
        .await;
    match result {
        Err(StoreError::DuplicateEvent { event_id }) => assert_eq!(event_id, reused),
        other => panic!("expected a duplicate event, got {other:?}"),
    }
    assert_eq!(store.stream_version("call-2").await?, None);
    assert_eq!(ids(&store.read_stream("call-1").await?), [reused]);

    let twice = event("Twice");
    let result = store
        .append(vec![to(
            "call-3",
            ExpectedVersion::NoStream,
            vec![twice.clone(), twice.clone()],
        )])
        .await;
    match result {
        Err(StoreError::DuplicateEvent { event_id }) => assert_eq!(event_id, twice.event_id),
        other => panic!("expected a duplicate event, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn malformed_appends_are_rejected() -> anyhow::Result<()> {
    let (_db, store) = store().await;
    let cases = [
        vec![],
        vec![to("call-1", ExpectedVersion::Any, vec![])],
        vec![
            to("call-1", ExpectedVersion::Any, events(1)),
            to("call-1", ExpectedVersion::Any, events(1)),
        ],
    ];
    for appends in cases {
        let result = store.append(appends.clone()).await;
        assert!(
            matches!(result, Err(StoreError::InvalidAppend { .. })),
            "{appends:?} gave {result:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_waiting_appender_takes_its_transaction_id_only_after_the_wait() -> anyhow::Result<()> {
    // Feed order is transaction-id order. An appender that waits for a stream
    // must not hold a transaction id from before the wait, or a transaction
    // that appends to one of its streams while it waits could get a higher id
    // and come out of the feed before versions it wrote earlier.
    let (db, store) = store().await;
    let holder = store
        .append(vec![to("call-b", ExpectedVersion::Any, events(1))])
        .await?;
    let waiter = tokio::spawn({
        let store = store.clone();
        async move {
            let uow = store
                .append(vec![
                    to("call-a", ExpectedVersion::Any, events(1)),
                    to("call-b", ExpectedVersion::Any, events(1)),
                ])
                .await?;
            anyhow::Ok(uow.commit().await?)
        }
    });

    // Wait until the waiter is blocked on a stream lock, then check it has
    // no transaction id yet.
    let mut admin = sqlx::PgConnection::connect(&db.url()).await?;
    let mut blocked = None;
    for _ in 0..100 {
        blocked = sqlx::query_as::<_, (Option<String>,)>(
            "SELECT backend_xid::text FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event = 'advisory'",
        )
        .fetch_optional(&mut admin)
        .await?;
        if blocked.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        blocked,
        Some((None,)),
        "waiting for the lock without an xid"
    );

    // A transaction that writes while the waiter waits gets an id...
    let meanwhile = append(&store, "call-c", ExpectedVersion::Any, 1).await?;
    let holder = holder.commit().await?;
    let waited = waiter.await??;
    // ...below the waiter's, so the waiter's events come after it in the feed.
    assert!(waited[0].tx_id > meanwhile[0].tx_id);
    assert!(waited[0].tx_id > holder[0].tx_id);
    let b: Vec<_> = waited.iter().filter(|e| e.stream_id == "call-b").collect();
    assert_eq!(b[0].version, 2);
    admin.close().await?;
    Ok(())
}
