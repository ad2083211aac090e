//! The naive loop: poll, decide, one request, synchronous commit, repeat.

use super::*;

/// What the sequential loop measured.
pub(super) struct SequentialResult {
    pub(super) events: usize,
    pub(super) requests: usize,
    pub(super) elapsed: Duration,
}

/// Poll one record, decide, send its update (if any) and wait for the answer,
/// commit synchronously, repeat. Timed from the first record.
pub(super) fn sequential(
    options: &Options,
    kafka: &Kafka,
    simulators: &Handle,
) -> anyhow::Result<SequentialResult> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let simulator = runtime.block_on(start_simulator(simulators, options.latency_ms))?;
    let endpoint =
        UpdateEndpoint::new(&simulator.base_url(), CLIENT_CODE).map_err(anyhow::Error::msg)?;
    let client = http_client(1)?;
    let mapping = Mapping::default();
    let consumer: BaseConsumer = kafka
        .config()
        .set("group.id", "bench-sequential")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..options.partitions {
        assignment.add_partition_offset(TOPIC, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    println!(
        "sequential consume-send-commit loop, {} ms latency: running ({} events)...",
        options.latency_ms, options.sequential
    );
    let (mut events, mut requests, mut started) = (0, 0, None);
    let deadline = Instant::now() + options.timeout;
    while events < options.sequential {
        ensure!(Instant::now() < deadline, "sequential loop timed out");
        let Some(message) = consumer.poll(Duration::from_secs(1)) else {
            continue;
        };
        let message = message?;
        started.get_or_insert_with(Instant::now);
        if let Decision::Update(update) = mapping.decide(message.payload().unwrap_or_default()) {
            let request = endpoint.request(&update);
            ensure!(
                runtime.block_on(send(&client, &request)),
                "the simulator did not accept an update"
            );
            requests += 1;
        }
        consumer.commit_message(&message, CommitMode::Sync)?;
        events += 1;
    }
    let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
    runtime.block_on(stop_simulator(simulators, simulator));
    Ok(SequentialResult {
        events,
        requests,
        elapsed,
    })
}
