//! The control API (actix-web, loopback by default): placeholder until written.
