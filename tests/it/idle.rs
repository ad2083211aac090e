//! An idle Kafka client waits: a producer's poll with nothing to deliver
//! costs next to no CPU. Every `FutureProducer` (the dead-letter writer's)
//! polls this way on its own thread, 100 ms at a time, for the whole life of
//! the pod.

use nix::time::{clock_gettime, ClockId};
use pps_test_kit::broker::Kafka;
use rdkafka::producer::{BaseProducer, Producer};
use std::time::Duration;

/// The CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let now = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("the thread's CPU clock");
    Duration::from(now)
}

/// Twenty polls of 100 ms on an idle producer. Truncated to whole
/// milliseconds, the wait left less than one after its first round and the
/// poll spun until the deadline: about 1 ms of CPU per poll, 20 ms here
/// (rust-rdkafka 0.39.0 as published; `vendor/rdkafka/PATCHED.md`). Waiting,
/// the thread uses a few tens of microseconds.
#[test]
fn an_idle_producer_poll_waits_instead_of_spinning() {
    let kafka = Kafka::start(1);
    let producer: BaseProducer = kafka
        .config()
        .set("enable.idempotence", "true")
        .create()
        .expect("a producer");
    // Let it connect and settle, with its own polls.
    producer
        .flush(Duration::from_secs(5))
        .expect("nothing to flush");
    let polls = 20;
    let before = thread_cpu();
    for _ in 0..polls {
        producer.poll(Duration::from_millis(100));
    }
    let used = thread_cpu() - before;
    // A quarter of the spinning's cost: far above waiting, far below spinning.
    assert!(
        used < Duration::from_millis(5),
        "{polls} idle polls of 100 ms used {used:?} of CPU: the poll spins instead of waiting"
    );
}
