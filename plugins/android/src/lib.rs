//! Example ballast integration: android.
