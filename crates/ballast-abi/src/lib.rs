//! The stable C ABI between ballast and its plugins.
