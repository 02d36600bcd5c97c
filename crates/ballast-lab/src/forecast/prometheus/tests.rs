//! Tests of the fleet report from Prometheus's answers.
