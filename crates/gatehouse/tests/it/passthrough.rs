//! Standard clients work unchanged through the gateway: simple and extended protocol,
//! binary results, pipelining, transactions, COPY both ways, LISTEN/NOTIFY, cancel.

use crate::support::*;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, TryStreamExt, future};
use tokio_postgres::SimpleQueryMessage;

#[tokio::test]
async fn simple_and_extended_protocol_with_binary_results() {
    let gw = Gateway::start();
    let token = gw.token("fraud-bot", &["fraud-bots"]);
    let c = gw.connect("payments", &token).await;

    // Simple protocol, multi-statement.
    let msgs = c
        .simple_query("SELECT 1 AS a; SELECT 'x' AS b")
        .await
        .unwrap();
    let rows: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(rows, vec!["1", "x"]);

    // Extended protocol with parameters; tokio-postgres receives results in binary format.
    let row = c
        .query_one(
            "SELECT $1::int8 + 1, $2::text, now() > '2000-01-01'::timestamptz",
            &[&41i64, &"hi"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 42);
    assert_eq!(row.get::<_, &str>(1), "hi");
    assert!(row.get::<_, bool>(2));

    // Prepared statement reused.
    let st = c
        .prepare("SELECT name FROM customers WHERE id = $1")
        .await
        .unwrap();
    for (id, name) in [(1, "Ada"), (2, "Grace")] {
        let r = c.query_one(&st, &[&id]).await.unwrap();
        assert_eq!(r.get::<_, &str>(0), name);
    }

    // Errors keep the session usable.
    let e = c
        .simple_query("SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42P01"));
    let e = c.query("SELECT 1/$1::int", &[&0i32]).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("22012"));
    assert_eq!(
        c.query_one("SELECT 7", &[]).await.unwrap().get::<_, i32>(0),
        7
    );
}

#[tokio::test]
async fn pipelining_and_transactions() {
    let pg = cluster();
    pg.create_database("pipeline");
    let gw = Gateway::builder()
        .connection("pipeline", "pipeline")
        .start();
    let token = gw.token("dba-1", &["dba"]);
    let mut c = gw.connect("pipeline", &token).await;

    // tokio-postgres pipelines concurrent queries on one connection.
    let st = c.prepare("SELECT $1::int * 2").await.unwrap();
    let nums: Vec<i32> = (0..50).collect();
    let futs: Vec<_> = nums
        .iter()
        .map(|i| {
            let (c, st) = (&c, &st);
            async move { c.query_one(st, &[i]).await }
        })
        .collect();
    let results = future::try_join_all(futs).await.unwrap();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.get::<_, i32>(0), i as i32 * 2);
    }

    c.batch_execute("CREATE TABLE t (v int)").await.unwrap();
    let tx = c.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    tx.rollback().await.unwrap();
    let tx = c.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    tx.commit().await.unwrap();
    let direct = pg.direct("pipeline").await;
    let vals: Vec<i32> = direct
        .query("SELECT v FROM t", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(vals, vec![2]);

    // A failed statement aborts the transaction on both sides, as PostgreSQL would.
    c.batch_execute("BEGIN").await.unwrap();
    assert!(c.batch_execute("SELECT 1/0").await.is_err());
    let e = c.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("25P02"));
    c.batch_execute("ROLLBACK").await.unwrap();
    c.batch_execute("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn copy_in_and_out() {
    let pg = cluster();
    pg.create_database("copies");
    let gw = Gateway::builder().connection("copies", "copies").start();
    let token = gw.token("etl", &["dba"]);
    let c = gw.connect("copies", &token).await;
    c.batch_execute("CREATE TABLE items (id int, label text)")
        .await
        .unwrap();

    let sink = c.copy_in("COPY items FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    let mut data = String::new();
    for i in 0..10_000 {
        data.push_str(&format!("{i}\tlabel-{i}\n"));
    }
    for chunk in data.as_bytes().chunks(7000) {
        sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 10_000);

    let stream = c
        .copy_out("COPY (SELECT * FROM items ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
    let out: Vec<u8> = chunks.concat();
    assert_eq!(String::from_utf8(out).unwrap(), data);

    let direct = pg.direct("copies").await;
    let n: i64 = direct
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 10_000);
}

#[tokio::test]
async fn listen_notify_reaches_the_client() {
    let gw = Gateway::start();
    let token = gw.token("listener", &["dba"]);
    let (client, mut conn) = tokio_postgres::connect(
        &gw.conn_str("payments", "agent", &token),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(stream.for_each(move |m| {
        if let Ok(tokio_postgres::AsyncMessage::Notification(n)) = m {
            let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
        }
        future::ready(())
    }));
    client.batch_execute("LISTEN card_events").await.unwrap();
    cluster()
        .direct("payments")
        .await
        .batch_execute("NOTIFY card_events, 'hello'")
        .await
        .unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, ("card_events".to_owned(), "hello".to_owned()));
}

#[tokio::test]
async fn cancel_reaches_the_right_backend() {
    let gw = Gateway::start();
    let token = gw.token("canceller", &["dba"]);
    let c = gw.connect("payments", &token).await;
    let other = gw.connect("payments", &token).await;
    let cancel = c.cancel_token();
    let started = std::time::Instant::now();
    let sleeper = tokio::spawn(async move {
        c.simple_query("SELECT pg_sleep(30) AS passthrough_cancel")
            .await
    });
    cluster().wait_until_running("passthrough_cancel").await;
    cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let res = sleeper.await.unwrap();
    let e = res.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    // The other session was not affected.
    assert_eq!(
        other
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

#[tokio::test]
async fn large_result_streams() {
    let gw = Gateway::start();
    let token = gw.token("bulk", &["dba"]);
    let c = gw.connect("payments", &token).await;
    let rows = c
        .query_raw(
            "SELECT g, repeat('x', 100) FROM generate_series(1, 200000) g",
            Vec::<i32>::new(),
        )
        .await
        .unwrap();
    futures_util::pin_mut!(rows);
    let mut n = 0u64;
    while let Some(r) = rows.try_next().await.unwrap() {
        n += 1;
        assert_eq!(r.get::<_, i32>(0) as u64, n);
    }
    assert_eq!(n, 200_000);
}

#[tokio::test]
async fn graceful_stop_ends_open_sessions_and_seals_the_chain() {
    let mut gw = Gateway::start();
    let token = gw.token("idle-bot", &["dba"]);
    let c = gw.connect("payments", &token).await;
    c.simple_query("SELECT 1").await.unwrap();
    let started = std::time::Instant::now();
    gw.stop();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "an idle session must not hold up shutdown"
    );
    // The client was told (57P01) and its connection is closed.
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert!(c.is_closed(), "{e}");
    let recs = gw.export();
    let end = recs
        .iter()
        .find(|r| r["kind"] == "session_end")
        .expect("session_end recorded at shutdown");
    assert_eq!(end["detail"]["reason"], "gateway shutdown");
    let out = gw.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
