use super::*;

fn answered<T: std::fmt::Debug>(reply: Result<Reply<T>, BadReply>) -> T {
    match reply {
        Ok(Reply::Answered(value)) => value,
        other => panic!("expected an answer, got {other:?}"),
    }
}

#[test]
fn adobes_documented_submit_answer_gives_the_status_url() {
    let xml = "<response><success>true</success>\n\
        <batchStatus>http://mboxedge45.tt.omtrdc.net/m2/demo/profile/batchStatus?batchId=demo-1701473848678-13029383</batchStatus>\n\
        <message>Batch submitted for processing</message></response>";
    let submitted = answered(parse_submit(xml));
    assert_eq!(
        submitted.status_url,
        "http://mboxedge45.tt.omtrdc.net/m2/demo/profile/batchStatus?batchId=demo-1701473848678-13029383"
    );
    assert_eq!(submitted.message, "Batch submitted for processing");
}

#[test]
fn an_escaped_ampersand_in_the_status_url_is_resolved() {
    let xml = "<?xml version=\"1.0\"?><response><success>true</success>\
        <batchStatus>http://e/m2/t/profile/batchStatus?batchId=t-1&amp;mboxPC=0.19_05</batchStatus>\
        </response>";
    let submitted = answered(parse_submit(xml));
    assert_eq!(
        submitted.status_url,
        "http://e/m2/t/profile/batchStatus?batchId=t-1&mboxPC=0.19_05"
    );
    assert_eq!(submitted.message, "");
}

#[test]
fn success_false_is_a_refusal_with_its_message() {
    let xml = "<response><success>false</success><message>Unexpected error</message></response>";
    assert_eq!(
        parse_submit(xml),
        Ok(Reply::Refused {
            message: "Unexpected error".to_owned()
        })
    );
    assert_eq!(
        parse_status(xml),
        Ok(Reply::Refused {
            message: "Unexpected error".to_owned()
        })
    );
}

#[test]
fn a_submit_answer_without_a_status_url_is_bad() {
    let xml = "<response><success>true</success><message>ok</message></response>";
    assert_eq!(parse_submit(xml), Err(BadReply::Missing("batchStatus")));
}

#[test]
fn a_status_url_must_be_an_http_url() {
    for url in [
        "batchStatus?batchId=1",
        "ftp://edge/x",
        "javascript:alert(1)",
    ] {
        let xml =
            format!("<response><success>true</success><batchStatus>{url}</batchStatus></response>");
        assert_eq!(parse_submit(&xml), Err(BadReply::NotAUrl(url.to_owned())));
    }
}

#[test]
fn adobes_documented_short_status_answer_parses() {
    let xml = "<response><batchId>demo4-1701473848678-13029383</batchId>\
        <status>complete</status><batchSize>1</batchSize></response>";
    let report = answered(parse_status(xml));
    assert_eq!(report.batch_id, "demo4-1701473848678-13029383");
    assert_eq!(report.state, BatchState::Complete);
    assert_eq!(report.batch_size, Some(1));
    assert_eq!(report.consumed_count, None);
    assert_eq!(report.failed_updates, None);
    assert!(report.failed_ids.is_empty());
}

#[test]
fn adobes_documented_detailed_status_answer_parses() {
    let xml = "<response>\n    <batchId>demo4-1701473848678-13029383</batchId>\n    \
        <status>complete</status>\n    <batchSize>1</batchSize>\n    \
        <consumedCount>1</consumedCount>\n    <successfulUpdates>1</successfulUpdates>\n    \
        <profilesNotFound>0</profilesNotFound>\n    <failedUpdates>0</failedUpdates>\n</response>";
    let report = answered(parse_status(xml));
    assert_eq!(
        (
            report.consumed_count,
            report.successful_updates,
            report.profiles_not_found,
            report.failed_updates
        ),
        (Some(1), Some(1), Some(0), Some(0))
    );
}

#[test]
fn stray_spaces_around_values_are_trimmed() {
    // Adobe's older sample has a space inside <batchId>.
    let xml = "<response>\n<batchId> testclient -1470380971</batchId>\n<status>complete</status>\n\
        <batchSize>5</batchSize>\n<successfulUpdates>2</successfulUpdates>\n\
        <profilesNotFound>3</profilesNotFound>\n<failedUpdates>0</failedUpdates>\n</response>";
    let report = answered(parse_status(xml));
    assert_eq!(report.batch_id, "testclient -1470380971");
    assert_eq!(report.profiles_not_found, Some(3));
}

#[test]
fn failed_rows_are_listed_by_id_wrapped_or_not() {
    let xml = "<response><batchId>b</batchId><status>complete</status><batchSize>4</batchSize>\
        <failedUpdates>3</failedUpdates>\
        <profile><id>CRM-1</id><status>failed</status></profile>\
        <profiles><profile><id> a&amp;b </id><status>FAILED</status></profile>\
        <profile><status>failed</status><id>caf&#233;</id></profile>\
        <profile><id>ok</id><status>success</status></profile></profiles></response>";
    let report = answered(parse_status(xml));
    // Ids exactly as written: an identifier may carry spaces.
    assert_eq!(report.failed_ids, ["CRM-1", " a&b ", "café"]);
    assert_eq!(report.failed_updates, Some(3));
}

#[test]
fn every_documented_state_is_recognised_and_others_are_not() {
    let with = |status: &str| {
        parse_status(&format!(
            "<response><batchId>b</batchId><status>{status}</status></response>"
        ))
    };
    assert_eq!(answered(with("complete")).state, BatchState::Complete);
    assert_eq!(answered(with("incomplete")).state, BatchState::Incomplete);
    assert_eq!(answered(with("stuck")).state, BatchState::Stuck);
    assert_eq!(
        with("done"),
        Err(BadReply::UnknownStatus("done".to_owned()))
    );
    assert_eq!(
        parse_status("<response><status>complete</status></response>"),
        Err(BadReply::Missing("batchId"))
    );
}

#[test]
fn garbage_is_an_error_value_never_a_panic() {
    let cases = [
        "",
        "not xml at all",
        "<html><body>502 Bad Gateway</body></html>",
        "<response><batchId>b</batchId><status>complete</status>",
        "<response><batchId>b</batchId></status></response>",
        "<response><batchId>b</batchId><status>complete</status><batchSize>-1</batchSize></response>",
        "<response><batchId>b</batchId><status>complete</status><batchSize>x</batchSize></response>",
        "<response><batchId>&bogus;</batchId></response>",
        "<response/><response/>",
        "\u{0}\u{ffff}<<<>>>",
    ];
    for xml in cases {
        assert!(parse_status(xml).is_err(), "{xml:?}");
        assert!(parse_submit(xml).is_err(), "{xml:?}");
    }
    assert_eq!(
        parse_status("<response><batchId>b</batchId><status>complete</status><batchSize>x</batchSize></response>"),
        Err(BadReply::NotACount {
            field: "batchSize",
            value: "x".to_owned()
        })
    );
}

proptest::proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        let _ = parse_status(&text);
        let _ = parse_submit(&text);
    }
}

#[test]
fn a_failed_ids_surrounding_spaces_are_kept() {
    let xml = "<response><batchId>b</batchId><status>complete</status>\
        <failedUpdates>1</failedUpdates>\
        <profile><id> CRM-1</id><status> failed </status></profile></response>";
    assert_eq!(answered(parse_status(xml)).failed_ids, [" CRM-1"]);
}
