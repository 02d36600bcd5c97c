//! Example ballast integration: voice.
