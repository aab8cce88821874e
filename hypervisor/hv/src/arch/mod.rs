//! Architecture code. Each architecture's portable encodings build and are tested on the host;
//! its hardware modules build only for its bare-metal target and are the only place with
//! `unsafe`, each block with its reason.

pub mod aarch64;
