//! The operator tools from outside, as an operator runs them: the real
//! binary against the mock cluster. `produce` publishes exactly the
//! generator's events for a seed; `dlq replay` moves exactly the dead
//! letters asked for, byte for byte, once; bad options exit 2.

use crate::helpers::*;
use pos_profile_sync::generator::{Generator, GeneratorConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished tool run left behind.
struct ToolRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for ToolRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `pos-profile-sync ARGS` to the end.
fn tool(args: &[&str]) -> ToolRun {
    let output = Command::new(env!("CARGO_BIN_EXE_pos-profile-sync"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run the binary");
    ToolRun::from(output)
}

impl From<std::process::Output> for ToolRun {
    fn from(output: std::process::Output) -> Self {
        ToolRun {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// A configuration file naming the cluster, the service's group and the
/// dead-letter topic, as an operator's would.
fn tool_config(kafka: &Kafka) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let toml = format!(
        "[kafka]\nbrokers = \"{}\"\ntopics = [\"{TOPIC}\"]\ngroup_id = \"pos-profile-sync\"\ndlq_topic = \"{DLQ}\"\n",
        kafka.bootstrap
    );
    std::fs::write(&path, toml).unwrap();
    (dir, path)
}

/// A group's committed offset on partition 0 of a topic, if any.
fn committed_on(kafka: &Kafka, group: &str, topic: &str) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, 0);
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .expect("committed offsets");
    match committed.find_partition(topic, 0).map(|e| e.offset()) {
        Some(Offset::Offset(offset)) => Some(offset),
        _ => None,
    }
}

/// Values per key, in the order they were published (Kafka keeps the order
/// of a key, which lives in one partition).
fn by_key<'a>(
    records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> BTreeMap<Vec<u8>, Vec<Vec<u8>>> {
    let mut out: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for (key, value) in records {
        out.entry(key.to_vec()).or_default().push(value.to_vec());
    }
    out
}

#[test]
fn produce_publishes_exactly_the_events_the_generator_makes_for_the_seed() {
    let kafka = Kafka::start(3);
    let run = tool(&[
        "produce",
        "--brokers",
        &kafka.bootstrap,
        "--events",
        "600",
        "--profiles",
        "40",
        "--zipf",
        "1.1",
        "--bad-ratio",
        "0.05",
        "--seed",
        "7",
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stdout.starts_with("produced 600 events, ") && run.stdout.contains(" events/s)"),
        "{run}"
    );

    let expected: Vec<_> = Generator::new(GeneratorConfig {
        events: 600,
        customers: 40,
        zipf: 1.1,
        bad_ratio: 0.05,
        seed: 7,
        ..GeneratorConfig::default()
    })
    .collect();
    let published = kafka.read_all(TOPIC);
    assert_eq!(published.len(), 600);
    let bytes: usize = expected.iter().map(|e| e.key.len() + e.payload.len()).sum();
    assert!(run.stdout.contains(&format!(" {bytes} bytes")), "{run}");
    assert_eq!(
        by_key(
            published
                .iter()
                .map(|r| (r.key.as_deref().unwrap_or_default(), &r.value[..]))
        ),
        by_key(expected.iter().map(|e| (&e.key[..], &e.payload[..])))
    );
}

#[test]
fn produce_at_a_rate_takes_as_long_as_the_rate_says() {
    let kafka = Kafka::start(1);
    let started = Instant::now();
    let run = tool(&[
        "produce",
        "--brokers",
        &kafka.bootstrap,
        "--events",
        "60",
        "--rate",
        "100",
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    // 60 events at 100/s with a burst of one: at least 0.59 s.
    assert!(started.elapsed() >= Duration::from_millis(590), "{run}");
    assert_eq!(kafka.read_all(TOPIC).len(), 60);
}

#[test]
fn produce_refuses_impossible_options_with_exit_code_2_and_says_why() {
    let cases: [(&[&str], &str); 7] = [
        (&["--customers", "0"], "--customers"),
        (&["--profiles", "0"], "--customers"),
        (&["--rate", "-1"], "positive number of events per second"),
        (&["--rate", "NaN"], "positive number of events per second"),
        (&["--bad-ratio", "1.5"], "from 0 to 1"),
        (&["--property", "linger.ms"], "KEY=VALUE"),
        (&["--property", "bootstrap.servers=x:1"], "use --brokers"),
    ];
    for (options, says) in cases {
        let mut args = vec!["produce", "--brokers", "127.0.0.1:1"];
        args.extend_from_slice(options);
        let run = tool(&args);
        assert_eq!(run.code, Some(2), "{options:?}: {run}");
        assert!(run.stderr.contains(says), "{options:?}: {run}");
    }
    let run = tool(&["produce", "--events", "1"]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("--brokers"), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_replay_moves_the_chosen_dead_letters_byte_for_byte_exactly_once() {
    let kafka = Kafka::start(2);
    let work = Workload::new(GeneratorConfig {
        events: 400,
        customers: 50,
        bad_ratio: 0.08,
        ..GeneratorConfig::default()
    });
    kafka.produce(&work.events);
    let sim = start_simulator(None).await;
    let mut app = spawn_app(&AppConfig::new(&kafka, &sim));
    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(60)).await;
    let (status, _) = app.terminate(Duration::from_secs(20));
    assert!(status.success());

    let letters = kafka.read_all(DLQ);
    let chosen: Vec<&Consumed> = letters
        .iter()
        .filter(|l| l.headers["pps-error-class"] == "invalid_json")
        .collect();
    let n = chosen.len();
    assert_eq!(n, work.malformed()["invalid_json"]);
    assert!(n > 0 && n < letters.len(), "{n} of {}", letters.len());
    let others = letters.len() - n;

    const REPLAYED: &str = "pos.purchases.replayed";
    kafka.mock().create_topic(REPLAYED, 1, 3).unwrap();
    let (_dir, config) = tool_config(&kafka);
    let config = config.to_str().unwrap();
    let replay_to = |to: &str, extra: &[&str]| {
        let mut args = vec![
            "dlq",
            "replay",
            "--config",
            config,
            "--class",
            "invalid_json",
            "--to",
            to,
        ];
        args.extend_from_slice(extra);
        tool(&args)
    };
    let replay = |extra: &[&str]| replay_to(REPLAYED, extra);
    let group = "pos-profile-sync-dlq-replay";

    // A dry run counts and moves nothing.
    let dry = replay(&["--dry-run"]);
    assert_eq!(dry.code, Some(0), "{dry}");
    assert!(
        dry.stdout
            .contains(&format!("would replay {n} to {REPLAYED}")),
        "{dry}"
    );
    assert!(
        dry.stdout
            .contains(&format!("  invalid_json: would replay {n}\n")),
        "{dry}"
    );
    assert!(kafka.read_all(REPLAYED).is_empty());
    assert_eq!(committed_on(&kafka, group, DLQ), None);

    // The replay moves exactly those, key, value and headers intact.
    let real = replay(&[]);
    assert_eq!(real.code, Some(0), "{real}");
    assert!(
        real.stdout.contains(&format!("replayed {n} to {REPLAYED}")),
        "{real}"
    );
    assert!(
        real.stdout.contains(&format!(
            "skipped by filter {others}: {others} by class, 0 by offset range"
        )),
        "{real}"
    );
    let copies = kafka.read_all(REPLAYED);
    assert_eq!(copies.len(), n);
    for (copy, original) in copies.iter().zip(&chosen) {
        assert_eq!(copy.key, original.key, "key byte for byte");
        assert_eq!(copy.value, original.value, "value byte for byte");
        let mut headers = original.headers.clone();
        headers.insert(
            "pps-replayed-from".into(),
            format!("{DLQ}/{}/{}", original.partition, original.offset),
        );
        assert_eq!(copy.headers, headers);
    }
    let end = letters.last().map(|l| l.offset + 1);
    assert_eq!(committed_on(&kafka, group, DLQ), end);

    // Done once: the group resumes at the end and moves nothing.
    let again = replay(&[]);
    assert_eq!(again.code, Some(0), "{again}");
    assert!(again.stdout.contains("nothing to replay"), "{again}");
    assert_eq!(kafka.read_all(REPLAYED).len(), n);

    // A replay cut short (here by --until-offset) resumes where it stopped.
    const SECOND: &str = "pos.purchases.replayed.2";
    kafka.mock().create_topic(SECOND, 1, 3).unwrap();
    let half = n / 2;
    let cut = chosen[half].offset.to_string();
    let first = replay_to(SECOND, &["--group", "halves", "--until-offset", &cut]);
    assert_eq!(first.code, Some(0), "{first}");
    assert!(
        first.stdout.contains(&format!("replayed {half} to ")),
        "{first}"
    );
    let rest = replay_to(SECOND, &["--group", "halves"]);
    assert_eq!(rest.code, Some(0), "{rest}");
    assert!(
        rest.stdout.contains(&format!("replayed {} to ", n - half)),
        "{rest}"
    );
    let values: Vec<&Vec<u8>> = chosen.iter().map(|l| &l.value).collect();
    let second = kafka.read_all(SECOND);
    assert_eq!(second.iter().map(|r| &r.value).collect::<Vec<_>>(), values);
}

#[test]
fn produce_stops_on_ctrl_c_after_flushing_what_it_sent() {
    let kafka = Kafka::start(1);
    let child = Command::new(env!("CARGO_BIN_EXE_pos-profile-sync"))
        .args(["produce", "--brokers", &kafka.bootstrap])
        .args(["--events", "1000000", "--rate", "500"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start produce");
    let started = Instant::now();
    while kafka.end_offsets()[0] == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing produced"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let interrupt = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(interrupt.success());
    let run = ToolRun::from(child.wait_with_output().expect("wait for produce"));
    assert_eq!(run.code, Some(130), "{run}");
    let published = kafka.read_all(TOPIC).len();
    assert!(published > 0 && published < 1_000_000, "{published}");
    assert!(
        run.stdout
            .starts_with(&format!("produced {published} events, "))
            && run
                .stdout
                .contains(&format!("interrupted after {published} of 1000000")),
        "{published} in the topic; {run}"
    );
}

#[test]
fn a_missing_dead_letter_topic_exits_2_and_an_empty_one_has_nothing_to_replay() {
    let kafka = Kafka::start(1);
    let (_dir, config) = tool_config(&kafka);
    let config = config.to_str().unwrap();

    let missing = tool(&[
        "dlq",
        "replay",
        "--config",
        config,
        "--class",
        "retries_exhausted",
        "--dlq-topic",
        "no.such.dlq",
    ]);
    assert_eq!(missing.code, Some(2), "{missing}");
    assert!(
        missing.stderr.contains("topic no.such.dlq does not exist"),
        "{missing}"
    );

    let empty = tool(&[
        "dlq",
        "replay",
        "--config",
        config,
        "--class",
        "retries_exhausted",
    ]);
    assert_eq!(empty.code, Some(0), "{empty}");
    assert_eq!(empty.stdout, format!("nothing to replay: {DLQ} is empty\n"));

    let unknown = tool(&["dlq", "replay", "--config", config, "--class", "oops"]);
    assert_eq!(unknown.code, Some(2), "{unknown}");
    assert!(unknown.stderr.contains("target_rejected"), "{unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_record_that_fails_again_keeps_its_mark_and_can_be_left_alone() {
    let kafka = Kafka::start(2);
    let work = Workload::new(GeneratorConfig {
        events: 200,
        customers: 50,
        bad_ratio: 0.2,
        ..GeneratorConfig::default()
    });
    // Every other event comes back from an earlier replay.
    kafka.produce_with_headers(&work.events, |index| {
        if index % 2 == 0 {
            vec![("pps-replayed-from", format!("{DLQ}/0/{index}"))]
        } else {
            Vec::new()
        }
    });
    let sim = start_simulator(None).await;
    let mut app = spawn_app(&AppConfig::new(&kafka, &sim));
    wait_all_committed(&kafka, "pos-profile-sync", Duration::from_secs(60)).await;
    let (status, _) = app.terminate(Duration::from_secs(20));
    assert!(status.success());

    let sources: BTreeMap<(i32, i64), Consumed> = kafka
        .read_all(TOPIC)
        .into_iter()
        .map(|r| ((r.partition, r.offset), r))
        .collect();
    let letters = kafka.read_all(DLQ);
    assert!(!letters.is_empty());
    let mut marked = 0;
    for letter in &letters {
        let at = (
            letter.headers["pps-source-partition"].parse().unwrap(),
            letter.headers["pps-source-offset"].parse().unwrap(),
        );
        let mark = sources[&at].headers.get("pps-replayed-from");
        assert_eq!(letter.headers.get("pps-replayed-from"), mark, "{letter:?}");
        marked += usize::from(mark.is_some());
    }
    assert!(marked > 0 && marked < letters.len(), "{marked}");
    let classes = ["invalid_json", "schema_violation", "unsupported_version"];
    let (_dir, config) = tool_config(&kafka);
    let mut args = vec![
        "dlq",
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--dry-run",
    ];
    for class in &classes {
        args.extend(["--class", class]);
    }
    let every = tool(&args);
    assert_eq!(every.code, Some(0), "{every}");
    assert!(
        every.stdout.contains(&format!(
            "would replay {} to their source topics",
            letters.len()
        )),
        "{every}"
    );
    args.push("--skip-replayed");
    let once = tool(&args);
    assert_eq!(once.code, Some(0), "{once}");
    assert!(
        once.stdout.contains(&format!(
            "would replay {} to their source topics",
            letters.len() - marked
        )) && once
            .stdout
            .contains(&format!(", {marked} replayed before\n")),
        "{once}"
    );
}

#[test]
fn a_dead_letter_with_no_place_at_its_source_stops_the_replay_before_it() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::BaseRecord;
    let kafka = Kafka::start(2);
    let (_dir, config) = tool_config(&kafka);
    let config = config.to_str().unwrap();
    let producer = kafka.producer().unwrap();
    // One dead-letter topic for each case, its single letter naming its source.
    let cases = [
        (
            "dlq.no-topic",
            "no.such.topic",
            "0",
            Some(2),
            "topic no.such.topic does not exist",
        ),
        (
            "dlq.garbage",
            TOPIC,
            "two",
            Some(1),
            "pps-source-partition \"two\" is not a partition number",
        ),
        (
            "dlq.negative",
            TOPIC,
            "-1",
            Some(1),
            "pps-source-partition \"-1\" is not a partition number",
        ),
        (
            "dlq.too-far",
            TOPIC,
            "7",
            Some(1),
            "pps-source-partition 7 is not a partition of pos.purchases (it has 2)",
        ),
        (
            "dlq.fine",
            TOPIC,
            "1",
            Some(0),
            "replayed 1 to their source topics",
        ),
    ];
    for (dlq, source, partition, _, _) in cases {
        kafka.create_topic(dlq, 1).unwrap();
        let headers = [
            ("pps-error-class", "invalid_json"),
            ("pps-source-topic", source),
            ("pps-source-partition", partition),
            ("pps-source-offset", "0"),
        ]
        .iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(*value),
            })
        });
        let record = BaseRecord::to(dlq)
            .key(&b"CRM-1"[..])
            .payload(&b"{not json"[..])
            .headers(headers);
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).unwrap();
    for (dlq, _, _, code, said) in cases {
        let run = tool(&[
            "dlq",
            "replay",
            "--config",
            config,
            "--class",
            "invalid_json",
            "--dlq-topic",
            dlq,
        ]);
        assert_eq!(run.code, code, "{dlq}: {run}");
        assert!(
            run.stdout.contains(said) || run.stderr.contains(said),
            "{dlq}: {run}"
        );
    }
    // Only the letter with a place went back, to that partition; the missing
    // topic was not created.
    let back = kafka.read_all(TOPIC);
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0].partition, 1);
    assert_eq!(back[0].headers["pps-replayed-from"], "dlq.fine/0/0");
    // All topics: a request naming the topic would create it.
    let metadata = rdkafka::producer::Producer::client(&producer)
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    assert!(
        metadata
            .topics()
            .iter()
            .all(|t| t.name() != "no.such.topic"),
        "the replay created the missing source topic"
    );
}
