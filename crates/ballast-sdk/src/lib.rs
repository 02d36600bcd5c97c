//! What a Rust plugin author writes against: a safe Plugin trait and export_plugin!.
