//! The seed's line forecaster on ramps: the forecast is the ramp extrapolated, fitted over the
//! last window of buckets only, and late readings do not move it.

use std::time::Duration;

use ballast_core::Timestamp;

use super::LineForecaster;

const BUCKET_MS: u64 = 60_000;

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn ramp(bucket: u64) -> f64 {
    0.1 + 0.05 * bucket as f64
}

fn assert_near(got: Option<f64>, want: f64) {
    let got = got.expect("a forecast");
    assert!((got - want).abs() < 1e-9, "forecast {got}, expected {want}");
}

#[test]
fn a_ramp_is_extrapolated_over_the_last_window_of_buckets() {
    let mut line = LineForecaster::new(Duration::from_millis(BUCKET_MS), 4, 2);
    // Two readings a bucket, averaging to the bucket's value. Buckets 0 and 1 are far off the
    // ramp: they fall out of the four-bucket window before the forecast below.
    let value = |bucket: u64| if bucket < 2 { 0.9 } else { ramp(bucket) };
    for bucket in 0..=5 {
        let start = bucket * BUCKET_MS;
        let first = line.observe(at(start + 10_000), value(bucket) - 0.01);
        let second = line.observe(at(start + 40_000), value(bucket) + 0.01);
        if bucket < 2 {
            // Fewer than two buckets closed yet.
            assert_eq!((first, second), (None, None), "bucket {bucket}");
        }
    }
    // The first reading of bucket 6 closes bucket 5: the line through buckets 2 to 5,
    // two buckets past the newest.
    let forecast = line.observe(at(6 * BUCKET_MS + 10_000), 0.5);
    assert_near(forecast, ramp(7));
}

#[test]
fn a_late_reading_does_not_move_the_forecast() {
    let mut line = LineForecaster::new(Duration::from_millis(BUCKET_MS), 3, 2);
    // One reading a bucket: each closes its bucket at once.
    assert_eq!(line.observe(at(0), ramp(0)), None);
    assert_near(line.observe(at(BUCKET_MS), ramp(1)), ramp(3));
    assert_near(line.observe(at(2 * BUCKET_MS), ramp(2)), ramp(4));
    // A reading in bucket 1, already closed, and far off the ramp.
    assert_near(line.observe(at(BUCKET_MS + 30_000), 1.0), ramp(4));
    // Bucket 2 was closed when its reading came, so the late one does not reopen it.
    assert_near(line.observe(at(3 * BUCKET_MS), ramp(3)), ramp(5));
}
