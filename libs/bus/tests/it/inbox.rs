use std::time::Duration;

use chrono::Utc;
use skileez_bus::inbox::{self, Order};
use skileez_testkit::TestDatabase;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

async fn connection(db: &TestDatabase) -> PgConnection {
    PgConnection::connect_with(&db.connect_options())
        .await
        .unwrap()
}

#[tokio::test]
async fn claim_dedupes_per_consumer() {
    let db = TestDatabase::new().await;
    let mut conn = connection(&db).await;
    let id = Uuid::now_v7();

    let mut tx = conn.begin().await.unwrap();
    assert!(inbox::claim(&mut tx, "timers", id).await.unwrap());
    tx.commit().await.unwrap();

    let mut tx = conn.begin().await.unwrap();
    assert!(
        !inbox::claim(&mut tx, "timers", id).await.unwrap(),
        "a redelivery"
    );
    assert!(
        inbox::claim(&mut tx, "notifications", id).await.unwrap(),
        "another consumer"
    );
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_rolled_back_claim_leaves_no_trace() {
    let db = TestDatabase::new().await;
    let mut conn = connection(&db).await;
    let id = Uuid::now_v7();
    let mut tx = conn.begin().await.unwrap();
    assert!(inbox::claim(&mut tx, "timers", id).await.unwrap());
    tx.rollback().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    assert!(inbox::claim(&mut tx, "timers", id).await.unwrap());
}

#[tokio::test]
async fn a_concurrent_claim_waits_for_the_first_one() {
    let db = TestDatabase::new().await;
    let (mut a, mut b) = (connection(&db).await, connection(&db).await);
    let id = Uuid::now_v7();

    let mut first = a.begin().await.unwrap();
    assert!(inbox::claim(&mut first, "timers", id).await.unwrap());
    let second = tokio::spawn(async move {
        let mut tx = b.begin().await.unwrap();
        let claimed = inbox::claim(&mut tx, "timers", id).await.unwrap();
        tx.commit().await.unwrap();
        claimed
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !second.is_finished(),
        "the second claim waits for the first transaction"
    );
    first.commit().await.unwrap();
    assert!(!second.await.unwrap(), "and then sees it done");
}

#[tokio::test]
async fn advance_orders_versions() {
    let db = TestDatabase::new().await;
    let mut conn = connection(&db).await;
    let mut step = async |key: &str, version: u64| {
        let mut tx = conn.begin().await.unwrap();
        let order = inbox::advance(&mut tx, "timers", key, version)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        order
    };
    assert_eq!(
        step("c1", 2).await,
        Order::Ahead { expected: 1 },
        "first seen must be version 1"
    );
    assert_eq!(step("c1", 1).await, Order::Next);
    assert_eq!(step("c1", 1).await, Order::Stale);
    assert_eq!(step("c1", 3).await, Order::Ahead { expected: 2 });
    assert_eq!(step("c1", 2).await, Order::Next);
    assert_eq!(step("c1", 3).await, Order::Next);
    assert_eq!(step("c1", 2).await, Order::Stale);
    assert_eq!(step("c2", 1).await, Order::Next, "keys are independent");
}

#[tokio::test]
async fn an_advance_rolled_back_with_its_transaction_did_not_happen() {
    let db = TestDatabase::new().await;
    let mut conn = connection(&db).await;
    let mut tx = conn.begin().await.unwrap();
    assert_eq!(
        inbox::advance(&mut tx, "timers", "c", 1).await.unwrap(),
        Order::Next
    );
    tx.rollback().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    assert_eq!(
        inbox::advance(&mut tx, "timers", "c", 1).await.unwrap(),
        Order::Next
    );
}

#[tokio::test]
async fn advance_at_least_accepts_gaps_and_never_goes_back() {
    let db = TestDatabase::new().await;
    let mut conn = connection(&db).await;
    let mut step = async |version: u64| {
        let mut tx = conn.begin().await.unwrap();
        let order = inbox::advance_at_least(&mut tx, "notifications", "c1", version)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        order
    };
    assert_eq!(step(3).await, Order::Next, "first seen");
    assert_eq!(step(3).await, Order::Stale);
    assert_eq!(step(2).await, Order::Stale);
    assert_eq!(step(7).await, Order::Next);
}

#[tokio::test]
async fn concurrent_advance_on_one_key_is_serialised() {
    let db = TestDatabase::new().await;
    let (mut a, mut b) = (connection(&db).await, connection(&db).await);
    let mut tx = a.begin().await.unwrap();
    assert_eq!(
        inbox::advance(&mut tx, "timers", "c", 1).await.unwrap(),
        Order::Next
    );
    tx.commit().await.unwrap();

    // Two instances got version 2 (a redelivery) and version 3 at once.
    let mut first = a.begin().await.unwrap();
    assert_eq!(
        inbox::advance(&mut first, "timers", "c", 2).await.unwrap(),
        Order::Next
    );
    let second = tokio::spawn(async move {
        let mut tx = b.begin().await.unwrap();
        let order = inbox::advance(&mut tx, "timers", "c", 3).await.unwrap();
        tx.commit().await.unwrap();
        order
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !second.is_finished(),
        "version 3 waits for the transaction applying version 2"
    );
    first.commit().await.unwrap();
    assert_eq!(second.await.unwrap(), Order::Next, "and then follows it");
}

#[tokio::test]
async fn a_first_version_raced_by_two_instances_is_applied_once() {
    let db = TestDatabase::new().await;
    let (mut a, mut b) = (connection(&db).await, connection(&db).await);
    let mut first = a.begin().await.unwrap();
    assert_eq!(
        inbox::advance(&mut first, "timers", "new", 1)
            .await
            .unwrap(),
        Order::Next
    );
    let second = tokio::spawn(async move {
        let mut tx = b.begin().await.unwrap();
        let order = inbox::advance(&mut tx, "timers", "new", 1).await.unwrap();
        tx.commit().await.unwrap();
        order
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished());
    first.commit().await.unwrap();
    assert_eq!(second.await.unwrap(), Order::Stale);
}

#[tokio::test]
async fn many_instances_apply_every_version_once_and_in_order() {
    let db = TestDatabase::new().await;
    sqlx::query(
        "CREATE TABLE applied (key text, version bigint, seq bigint GENERATED ALWAYS AS IDENTITY)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    // Four "instances" each get all ten versions of two keys, in their own
    // order, and retry what is ahead, as the consumer would redeliver it.
    let mut instances = Vec::new();
    for instance in 0..4u64 {
        let mut conn = connection(&db).await;
        instances.push(tokio::spawn(async move {
            let mut todo: Vec<(String, u64)> = Vec::new();
            for v in 1..=10u64 {
                for key in ["x", "y"] {
                    todo.push((key.to_owned(), v));
                }
            }
            todo.rotate_left((instance * 5) as usize);
            if instance % 2 == 1 {
                todo.reverse();
            }
            while let Some((key, version)) = todo.first().cloned() {
                todo.remove(0);
                let mut tx = conn.begin().await.unwrap();
                match inbox::advance(&mut tx, "timers", &key, version)
                    .await
                    .unwrap()
                {
                    Order::Next => {
                        sqlx::query("INSERT INTO applied (key, version) VALUES ($1, $2)")
                            .bind(&key)
                            .bind(version as i64)
                            .execute(&mut *tx)
                            .await
                            .unwrap();
                        tx.commit().await.unwrap();
                    }
                    Order::Stale => tx.commit().await.unwrap(),
                    Order::Ahead { .. } => {
                        tx.rollback().await.unwrap();
                        todo.push((key, version));
                        tokio::task::yield_now().await;
                    }
                }
            }
        }));
    }
    for instance in instances {
        instance.await.unwrap();
    }
    for key in ["x", "y"] {
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM applied WHERE key = $1 ORDER BY seq")
                .bind(key)
                .fetch_all(db.pool())
                .await
                .unwrap();
        assert_eq!(versions, (1..=10).collect::<Vec<i64>>(), "key {key}");
    }
}

#[tokio::test]
async fn purge_removes_only_old_inbox_rows() {
    let db = TestDatabase::new().await;
    let mut conn = connection(&db).await;
    for _ in 0..5 {
        inbox::claim(&mut conn, "timers", Uuid::now_v7())
            .await
            .unwrap();
    }
    sqlx::query("UPDATE consumer_inbox SET processed_at = now() - interval '40 days' WHERE event_id IN (SELECT event_id FROM consumer_inbox LIMIT 3)")
        .execute(&mut conn)
        .await
        .unwrap();
    let purged = inbox::purge_inbox(db.pool(), Utc::now() - chrono::Duration::days(30))
        .await
        .unwrap();
    assert_eq!(purged, 3);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM consumer_inbox")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 2);
    assert_eq!(
        inbox::purge_inbox_older_than(db.pool(), Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
}
