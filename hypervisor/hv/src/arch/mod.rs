//! Architecture code: the only place with `unsafe`, each block with its reason.

pub mod aarch64;
