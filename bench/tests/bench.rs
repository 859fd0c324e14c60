//! The benchmark's own machinery at small scale, so that it cannot rot:
//! a short run completes, every message is accounted for, and the numbers
//! are sane. Nothing here judges performance.

use std::time::Duration;

use clawbus_bench::{self as bench, Kind, Settings, Side, SyncInterval};

#[tokio::test(flavor = "multi_thread")]
async fn a_short_run_accounts_for_every_message_on_every_side() {
    let settings = Settings {
        adapters: 2,
        agents: 4,
        rates: vec![50.0],
        step: Duration::from_secs(1),
        warmup: Duration::from_millis(300),
        saturate: Some(Duration::from_millis(500)),
        concurrency: 8,
        probe: None,
        settle: Duration::from_secs(30),
        sync_intervals: vec![SyncInterval::Always],
        ..Settings::standard()
    };
    let report = bench::run(&settings).await.expect("the benchmark runs");
    let mode = &report.modes[0];
    for side in [Side::Clawbus, Side::Raw, Side::Http] {
        for kind in [Kind::Warmup, Kind::Fixed, Kind::Saturate] {
            let step = mode.steps.iter().find(|s| s.side == side && s.kind == kind).expect("step measured");
            let what = format!("{side:?} {kind:?}");
            assert_eq!((step.errors, step.stored), (0, step.sent), "{what}: {:?}", step.error_examples);
            assert_eq!(step.missing, 0, "{what}: every stored message arrived");
            assert!(step.deliveries > 0, "{what}");
            let latency = step.latency.as_ref().expect("latencies");
            assert_eq!(latency.count, step.stored, "{what}");
            assert!(latency.min_ms > 0.0, "{what}: {latency:?}");
            assert!(latency.p50_ms <= latency.p99_ms && latency.p99_ms <= latency.max_ms, "{what}: {latency:?}");
            if kind == Kind::Fixed {
                assert_eq!(step.sent, 50, "{what}: rate times duration");
                assert!(step.lateness.is_some() && step.latency_from_schedule.is_some(), "{what}");
            }
        }
    }
    let fixed = |side| mode.steps.iter().find(|s| s.side == side && s.kind == Kind::Fixed).unwrap();
    assert!(fixed(Side::Clawbus).cost.adapters_cpu_ms.is_some() && fixed(Side::Raw).cost.adapters_cpu_ms.is_none());
    // The floor's endpoint thread is measured as the adapters are.
    assert!(fixed(Side::Http).cost.adapters_cpu_ms.is_some());
    assert!(fixed(Side::Raw).cost.jetstream_writes.is_some_and(|writes| writes >= 50));
    assert!(fixed(Side::Raw).cost.server_cpu_ms.is_some());
    assert_eq!(mode.comparisons.len(), 1);
    assert!(mode.throughput.is_some() && mode.highest_sustained.is_none());
    let ceiling = mode.ceiling.as_ref().expect("every side ran closed loop");
    assert!(ceiling.raw_us > 0.0 && ceiling.http_us > 0.0 && ceiling.clawbus_adapters_us > 0.0, "{ceiling:?}");
    assert!(ceiling.http_endpoint_us <= ceiling.http_us, "the endpoint is part of this process: {ceiling:?}");
    let parts = ceiling.clawbus_adapters_us + ceiling.clawbus_server_us + ceiling.clawbus_bench_us;
    assert!((ceiling.clawbus_us - parts).abs() < 1e-6, "{ceiling:?}");
    assert!(ceiling.bound_per_second > 0.0 && ceiling.http_per_second > 0.0, "{ceiling:?}");
    assert_eq!(mode.adapters.len(), 2);
    assert!(report.goals.iter().any(|goal| goal.goal.contains("woke its recipient") && goal.met));

    let json = serde_json::to_value(&report).expect("the report serializes");
    assert_eq!(json["modes"][0]["sync_interval"], "always");
    assert_eq!(json["settings"]["step"], 1.0);
    assert!(json["modes"][0]["steps"][2]["latency"]["p99_ms"].is_number(), "{:#}", json["modes"][0]["steps"][2]);
    let table = report.to_string();
    assert!(table.contains("clawbus") && table.contains("raw") && table.contains("ratio"), "{table}");
    assert!(table.contains("http floor") && table.contains("leave room for"), "{table}");
}
