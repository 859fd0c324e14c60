//! `clawbus doctor` on a healthy host, and on each failure it diagnoses.

use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Gateway, NatsServer, doctor, free_port, report_line as line};

// Multi-threaded: the stand-in gateway answers while doctor runs.
#[tokio::test(flavor = "multi_thread")]
async fn doctor_passes_a_healthy_host_and_names_each_failure() {
    let dir = tempfile::tempdir().unwrap();
    let monitor = free_port();
    let mut nats = NatsServer::start_with(&format!("http: 127.0.0.1:{monitor}"));
    let mut gateway = Gateway::start("hook").await;
    let config = AdapterConfig::new("hostA", nats.url())
        .agent(AgentSpec::silent("alice"))
        .agent(AgentSpec::new("bob", &gateway));
    let _adapter = Adapter::start_in_process(config.clone()).await;

    let (code, report) = doctor(dir.path(), &config, monitor);
    assert_eq!(code, 0, "{report}");
    for what in [
        "config",
        "nats",
        "jetstream",
        "account store",
        "stream replicas",
        "stream max_age",
        "duplicate window",
        "permissions",
        "fsync",
        "server store",
        "agent alice",
        "agent bob",
    ] {
        assert!(line(&report, what).starts_with("ok"), "{what}:\n{report}");
    }
    assert!(gateway.wakes().is_empty(), "doctor woke nobody");

    let wrong_token = AdapterConfig::new("hostA", nats.url()).agent(AgentSpec::new("bob", &gateway).hook_token("nope"));
    let (code, report) = doctor(dir.path(), &wrong_token, monitor);
    assert_eq!(code, 1);
    assert!(line(&report, "agent bob").starts_with("FAIL") && report.contains("hook_token"), "{report}");

    let three = config.clone().nats("replicas = 3");
    let (code, report) = doctor(dir.path(), &three, monitor);
    assert_eq!(code, 1);
    let replicas = line(&report, "stream replicas");
    assert!(replicas.starts_with("FAIL") && replicas.contains("nats.replicas is 3"), "{report}");

    gateway.stop().await;
    let (code, report) = doctor(dir.path(), &config, monitor);
    assert_eq!(code, 1);
    assert!(line(&report, "agent bob").starts_with("FAIL") && report.contains("not reachable"), "{report}");

    nats.stop();
    let (code, report) = doctor(dir.path(), &config, monitor);
    assert_eq!(code, 1);
    assert!(line(&report, "nats").starts_with("FAIL") && report.contains("not reachable"), "{report}");
}
