//! Smoothing, trend, anomaly detection and forecasting, and the PredictorActor.
