//! The wall clock, for times that leave the process or reach people: the Unix times of metrics
//! and of the status page, what replicas share through Redis, the UTC day that probe budgets count
//! in. Durations within one process are measured on the runtime's monotonic clock instead.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch (zero on a clock set before it).
pub fn since_epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Seconds since the Unix epoch, for `*_timestamp_seconds` gauges and the status page.
pub fn unix_seconds() -> f64 {
    since_epoch().as_secs_f64()
}

/// Milliseconds since the Unix epoch, for times shared between replicas.
pub fn unix_millis() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// Days since the Unix epoch, in UTC: the day `max_runs_per_day` counts in.
pub fn utc_day() -> u64 {
    since_epoch().as_secs() / 86_400
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_views_agree() {
        let (s, ms, day) = (unix_seconds(), unix_millis(), utc_day());
        assert!(s > 1.7e9, "a clock after 2023");
        assert!((ms as f64 / 1000.0 - s).abs() < 5.0);
        assert_eq!(day, (s as u64) / 86_400);
    }
}
