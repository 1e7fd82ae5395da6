//! Scale-out benchmark: 1000 small exports through 1 instance and through 2 instances on the same
//! PostgreSQL database and Garage bucket (real engines, started by satchel-testkit), plus the latency
//! of one export at rest (submit -> complete, p50/p99). Run: `cargo bench -p satchel --bench
//! scaleout_throughput` (knobs: EXPORTS=1000, AT_REST=50). Prints a table; asserts nothing about
//! speed (numbers, not pass/fail), but every export must complete.
//!
//! The binary's name starts with `scaleout`, so the shared test harness starts servers on
//! PostgreSQL + Garage.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{noise, Client, Server};
use futures::StreamExt;
use std::time::{Duration, Instant};

async fn wait_complete(c: &Client, msid: i64, eid: i64) {
    let path = format!("/users/alice/mysoftware/{msid}/exports/{eid}/status");
    loop {
        let r = c.get(&path).await;
        if r.field("complete").as_deref() == Some("true") {
            return;
        }
        assert_ne!(r.field("error").as_deref(), Some("true"), "{}", r.text());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Row {
    instances: usize,
    secs: f64,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

async fn run(instances: usize, exports: usize, at_rest: usize) -> Row {
    let first = Server::start(&common::UNLIMITED).await;
    let mut servers = vec![];
    for _ in 1..instances {
        servers.push(first.second(&common::UNLIMITED).await);
    }
    let clients: Vec<Client> = std::iter::once(&first)
        .chain(servers.iter())
        .map(|s| s.client("alice"))
        .collect();
    let c0 = &clients[0];
    let mut bundles = Vec::new();
    for i in 0..10u64 {
        let msid = c0.create_bundle(&format!("b{i}"), "1.0").await;
        c0.add_file(msid, None, "payload.bin", &noise(4096, i + 1))
            .await;
        bundles.push(msid);
    }
    // Latency at rest: one export at a time, submit -> complete.
    let mut lat = Vec::new();
    for n in 0..at_rest {
        let c = &clients[n % clients.len()];
        let msid = bundles[n % bundles.len()];
        let t = Instant::now();
        let eid = c.export(msid, "yaml").await;
        wait_complete(c, msid, eid).await;
        lat.push(t.elapsed());
    }
    lat.sort();
    // Throughput: all submitted (16 in flight, round-robin over instances), until the last completes.
    let db = sqlx::PgPool::connect(&first.database_url().expect("scale-out"))
        .await
        .expect("db");
    let t = Instant::now();
    futures::stream::iter(0..exports)
        .map(|n| {
            let c = clients[n % clients.len()].clone();
            let msid = bundles[n % bundles.len()];
            async move { c.export(msid, "yaml").await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    loop {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tickets WHERE state IN ('queued','running')")
                .fetch_one(&db)
                .await
                .expect("count");
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let done: i64 = sqlx::query_scalar("SELECT count(*) FROM tickets WHERE state = 'complete'")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(done as usize, exports + at_rest, "every export completes");
    Row {
        instances,
        secs,
        per_sec: exports as f64 / secs,
        p50: pct(&lat, 0.5),
        p99: pct(&lat, 0.99),
    }
}

fn main() {
    let exports: usize = std::env::var("EXPORTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let at_rest: usize = std::env::var("AT_REST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let rows: Vec<Row> = rt.block_on(async {
        let mut rows = Vec::new();
        for n in [1, 2] {
            rows.push(run(n, exports, at_rest).await);
        }
        rows
    });
    println!("\n{exports} small exports (one 4 KiB file each), PostgreSQL + Garage, 2 workers per instance");
    println!("| instances | seconds | exports/s | ratio vs 1 | at rest p50 | at rest p99 |");
    println!("|---|---|---|---|---|---|");
    let base = rows[0].per_sec;
    for r in &rows {
        println!(
            "| {} | {:.2} | {:.1} | {:.2} | {:.1} ms | {:.1} ms |",
            r.instances,
            r.secs,
            r.per_sec,
            r.per_sec / base,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3
        );
    }
    println!(
        "(all instances and both engines share this machine's {} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
}
