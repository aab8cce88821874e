//! Event-log entries named as the components an appraisal reports on.
//!
//! Every measured thing has one stable component name: `hypervisor`, `kernel`, `initramfs`,
//! `dtb`, `cmdline`, `agent`, `vswitch`, `vswitch-config`, `policy`, `middlebox:<name>` for a
//! middlebox binary, `config:<name>` for a middlebox configuration, and `other:<name>`.
//! Reference manifests list allowed digests under the same names.

use vtpm::{ComponentKind, Event};

/// The component name of an event; `None` for PCR resets, which measure nothing.
pub fn name(event: &Event) -> Option<String> {
    let n = event.name.as_str();
    Some(match event.kind {
        ComponentKind::Reset => return None,
        ComponentKind::BootFirmware => "firmware".into(),
        ComponentKind::Hypervisor => "hypervisor".into(),
        ComponentKind::HypervisorConfig => "hypervisor-config".into(),
        ComponentKind::GuestKernel => "kernel".into(),
        ComponentKind::GuestInitramfs => "initramfs".into(),
        ComponentKind::GuestDtb => "dtb".into(),
        ComponentKind::GuestCmdline => "cmdline".into(),
        ComponentKind::GatewayAgent => "agent".into(),
        ComponentKind::VSwitch => "vswitch".into(),
        ComponentKind::VSwitchConfig => "vswitch-config".into(),
        ComponentKind::Policy => "policy".into(),
        ComponentKind::MiddleboxBinary => format!("middlebox:{n}"),
        ComponentKind::MiddleboxConfig => format!("config:{n}"),
        ComponentKind::Other => format!("other:{n}"),
    })
}

/// Components whose events a controller compiles itself (configurations derived from the
/// signed policy) rather than reads from a reference manifest.
pub fn is_controller_config(component: &str) -> bool {
    component == "policy" || component.starts_with("config:")
}

#[cfg(test)]
mod tests {
    use super::*;
    use vtpm::PcrIndex;

    #[test]
    fn names_are_stable() {
        let e = |kind, n| Event::new(PcrIndex::new(40).unwrap(), [1; 32], kind, n, "1");
        assert_eq!(
            name(&e(ComponentKind::MiddleboxBinary, "firewall")).unwrap(),
            "middlebox:firewall"
        );
        assert_eq!(
            name(&e(ComponentKind::MiddleboxConfig, "ids")).unwrap(),
            "config:ids"
        );
        assert_eq!(name(&e(ComponentKind::GuestKernel, "x")).unwrap(), "kernel");
        assert!(name(&Event::reset(PcrIndex::new(16).unwrap())).is_none());
        assert!(is_controller_config("config:ids") && is_controller_config("policy"));
        assert!(!is_controller_config("kernel"));
    }
}
