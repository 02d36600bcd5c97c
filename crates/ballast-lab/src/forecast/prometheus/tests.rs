//! Tests of the fleet report's pure parts: Prometheus's answers parsed, counters differenced
//! (restarts and series that show late included), states replayed, nodes and the total.

use super::*;

fn series(labels: &[(&str, &str)], points: &[(u64, f64)]) -> Series {
    Series {
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        points: points
            .iter()
            .map(|(s, v)| (Timestamp::from_secs(*s), *v))
            .collect(),
    }
}

#[test]
fn a_matrix_parses_and_leaves_out_values_that_are_not_finite() {
    let body = r#"{"status":"success","data":{"resultType":"matrix","result":[
        {"metric":{"instance":"a","plugin":"p"},"values":[[10,"1"],[20,"NaN"],[30.5,"3"]]}]}}"#;
    let got = parse_matrix(body).unwrap();
    assert_eq!(
        got,
        vec![Series {
            labels: [("instance", "a"), ("plugin", "p")]
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            points: vec![
                (Timestamp::from_secs(10), 1.0),
                (Timestamp::from_millis(30_500), 3.0)
            ],
        }]
    );
}

#[test]
fn answers_that_are_not_a_matrix_say_what_they_are() {
    let error = parse_matrix(r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#);
    assert_eq!(
        error,
        Err(("bad_data".to_owned(), "parse error".to_owned()))
    );
    let (kind, what) = parse_matrix("<html>502 Bad Gateway</html>").unwrap_err();
    assert_eq!(kind, "");
    assert!(what.starts_with("a body that is not JSON"), "{what}");
    assert!(what.ends_with("<html>502 Bad Gateway</html>"), "{what}");
    let (_, what) =
        parse_matrix(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#)
            .unwrap_err();
    assert!(what.contains("\"vector\""), "{what}");
    let (_, what) = parse_matrix(
        r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"x"]]}]}}"#,
    )
    .unwrap_err();
    assert!(what.contains("not a number"), "{what}");
}

#[test]
fn counters_are_differenced_through_restarts() {
    // 5 calls, a restart (the counter starts again and reaches 2), 3 more.
    let points: Vec<(Timestamp, f64)> = [(0, 10.0), (10, 15.0), (20, 2.0), (30, 5.0), (40, 5.0)]
        .iter()
        .map(|(s, v)| (Timestamp::from_secs(*s), *v))
        .collect();
    let got = increases(&points, Timestamp::from_secs(0));
    let total: f64 = got.iter().map(|i| i.2).sum();
    assert_eq!(total, 10.0, "{got:?}");
    assert_eq!(
        got[1],
        (Timestamp::from_secs(10), Timestamp::from_secs(20), 2.0)
    );
    // A series that shows after the node's first point was made then: its first value counts,
    // in the step before it.
    let late = &points[3..];
    let got = increases(late, Timestamp::from_secs(0));
    assert_eq!(
        got,
        vec![(Timestamp::from_secs(20), Timestamp::from_secs(30), 5.0)]
    );
}

fn answers() -> Answers {
    // Two nodes over 100 s: a takes 10 calls a step, b 1 until its plugin is shed at 60 s and
    // refuses the 2 calls made after.
    let steps: Vec<u64> = (0..=10).map(|i| i * 10).collect();
    let a: Vec<(u64, f64)> = steps.iter().map(|s| (*s, *s as f64)).collect();
    let b_ok: Vec<(u64, f64)> = steps
        .iter()
        .map(|s| (*s, (*s).min(60) as f64 / 10.0))
        .collect();
    let state = |from: u64, to: u64| -> Vec<(u64, f64)> {
        steps
            .iter()
            .filter(|s| **s >= from && **s < to)
            .map(|s| (*s, 1.0))
            .collect()
    };
    Answers {
        calls: vec![
            series(&[("instance", "a"), ("plugin", "p"), ("outcome", "ok")], &a),
            series(
                &[("instance", "b"), ("plugin", "p"), ("outcome", "ok")],
                &b_ok,
            ),
            series(
                &[("instance", "b"), ("plugin", "p"), ("outcome", "degraded")],
                &[(80, 1.0), (90, 2.0), (100, 2.0)],
            ),
        ],
        states: vec![
            series(
                &[("instance", "a"), ("plugin", "p"), ("state", "enabled")],
                &state(0, 101),
            ),
            series(
                &[("instance", "b"), ("plugin", "p"), ("state", "enabled")],
                &state(0, 60),
            ),
            series(
                &[("instance", "b"), ("plugin", "p"), ("state", "disabled")],
                &state(60, 101),
            ),
        ],
        shed: vec![series(
            &[("instance", "b"), ("plugin", "p")],
            &steps
                .iter()
                .map(|s| (*s, if *s >= 60 { 1.0 } else { 0.0 }))
                .collect::<Vec<_>>(),
        )],
        utilization: vec![series(
            &[("instance", "a"), ("resource", "memory")],
            &[(0, 0.5), (100, 0.7)],
        )],
        // a's calls all come from `app`; b's from `-` (no name), its refused ones too.
        callers: vec![
            series(
                &[("instance", "a"), ("caller", "app"), ("outcome", "ok")],
                &a,
            ),
            series(
                &[("instance", "b"), ("caller", "-"), ("outcome", "ok")],
                &b_ok,
            ),
            series(
                &[("instance", "b"), ("caller", "-"), ("outcome", "refused")],
                &[(80, 1.0), (90, 2.0), (100, 2.0)],
            ),
        ],
    }
}

fn source() -> Source {
    Source {
        prometheus: "http://prometheus:9090".to_owned(),
        start: Timestamp::from_secs(0),
        end: Timestamp::from_secs(100),
        step_seconds: 10.0,
        queries: Queries::new(r#"job="ballast""#),
    }
}

#[test]
fn nodes_and_the_total_have_their_calls_outages_and_sheds() {
    let report = fleet_report(&answers(), source(), Duration::from_secs(50)).unwrap();
    let hours = |s: f64| s / 3600.0;
    // Recent: (50, 100]; baseline: (0, 50].
    let a = &report.nodes[0];
    assert_eq!(a.instance, "a");
    assert_eq!(a.report.recent_request_rate, 50.0 / hours(50.0));
    assert_eq!(a.report.baseline_request_rate, 50.0 / hours(50.0));
    assert!(a.report.plugin_outages.is_empty());
    let b = &report.nodes[1];
    // 1 call in (50, 60] and the 2 refused ones (the first in (70, 80], where the series
    // showed).
    assert_eq!(b.report.recent_request_rate, 3.0 / hours(50.0));
    assert_eq!(b.report.baseline_request_rate, 5.0 / hours(50.0));
    assert_eq!(b.report.plugin_failures[0].refused_calls, 2.0);
    assert_eq!(b.report.plugin_outages.len(), 1);
    let outage = &b.report.plugin_outages[0];
    assert_eq!(
        (
            outage.plugin.as_str(),
            outage.state.as_str(),
            outage.seconds
        ),
        ("p", "shed", 40.0)
    );
    assert!(outage.ongoing);
    assert_eq!(b.report.plugins[0].sheds, 1);

    let total = &report.total;
    assert_eq!(total.recent_request_rate, 53.0 / hours(50.0));
    assert_eq!(total.baseline_request_rate, 55.0 / hours(50.0));
    assert_eq!(total.plugin_outages[0].plugin, "p on b");
    let names: Vec<&str> = total.plugins.iter().map(|p| p.plugin.as_str()).collect();
    assert_eq!(names, ["p", "p on b"]);
    assert_eq!(total.resources[0].resource, Resource::Memory);
    let callers: Vec<(&str, f64, f64)> = total
        .top_callers
        .iter()
        .map(|c| (c.caller.as_str(), c.calls, c.failure_rate))
        .collect();
    assert_eq!(callers, [("app", 50.0, 0.0), ("-", 3.0, 2.0 / 3.0)]);
    assert!(total.notes.is_empty(), "{:?}", total.notes);

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["recent_request_rate"], total.recent_request_rate);
    assert_eq!(json["nodes"][1]["instance"], "b");
    assert_eq!(json["source"]["step_seconds"], 10.0);
    let text = fleet_markdown(&report);
    assert!(
        text.contains("Prometheus at http://prometheus:9090: 1970-01-01T00:00:00Z"),
        "{text}"
    );
    assert!(
        text.contains("| b | 360 | 216 | 143 | 0.60 | low | normal | 1 |"),
        "{text}"
    );
}

#[test]
fn missing_series_are_notes_not_zeros() {
    let mut answers = answers();
    answers.states.clear();
    answers.utilization.clear();
    answers.callers.clear();
    let report = fleet_report(&answers, source(), Duration::from_secs(50)).unwrap();
    assert!(
        report
            .total
            .notes
            .iter()
            .any(|n| n.starts_with("no ballast_plugin_state series")),
        "{:?}",
        report.total.notes
    );
    assert!(report.total.resources.is_empty());
    assert!(report.total.top_callers.is_empty());
    assert!(
        report.total.notes[0].starts_with("no ballast_caller_calls_total series"),
        "{:?}",
        report.total.notes
    );
}
