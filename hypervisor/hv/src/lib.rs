//! The Gatewarden micro-hypervisor.
//!
//! Portable modules (board constants, the guest bundle, device-tree edits, the guest's
//! placement, page-table descriptors) build and are tested on the host. The EL2 code lives in [`arch`] and only builds
//! for bare-metal aarch64 (`cargo xtask image`); all `unsafe` is fenced there.
#![cfg_attr(target_os = "none", no_std)]

pub mod boot_flow;
pub mod bundle;
pub mod dma_engine;
pub mod dtb;
pub mod dwc2;
pub mod exit;
pub mod guest;
pub mod layout;
pub mod local_page;
pub mod mailbox;
pub mod plan;

pub mod arch;

/// Board constants generated from `boards/<board>/board.toml`.
pub mod board {
    include!(concat!(env!("OUT_DIR"), "/board.rs"));
}

/// Version string in quotes and on the console.
pub const VERSION: &str = concat!("gatewarden-hv ", env!("CARGO_PKG_VERSION"));
