//! The device tree an image ships for a board that boots from a file (the Raspberry Pis):
//! Debian's tree from the kernel package, edited as the board data says (`[dtb] edits`, and
//! QEMU's `[qemu] dtb_edits` for the tree the QEMU tests boot), plus what the hypervisor
//! implies: where it releases the secondaries from the loader's spin table itself, the guest's
//! CPUs are started through PSCI, which the hypervisor answers.

use anyhow::{Context, Result, bail};
use dtoolkit::{
    Node,
    fdt::Fdt,
    model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty},
};

/// `source` with `edits` applied and, when `psci`, the guest's CPUs moved from the spin table
/// to PSCI (`/psci` with the HVC conduit; each `/cpus/cpu@N` gets `enable-method = "psci"`).
pub fn edited(source: &[u8], edits: &[&gw_board::DtbEdit], psci: bool) -> Result<Vec<u8>> {
    let fdt = Fdt::new(source).map_err(|e| anyhow::anyhow!("not a device tree: {e}"))?;
    let mut tree = DeviceTree::from_fdt(&fdt);
    for e in edits {
        let node = tree
            .find_node_mut(&e.node)
            .with_context(|| format!("the tree has no node {}", e.node))?;
        if e.disable {
            set_string(node, "status", "disabled");
        }
        for p in &e.delete {
            if node.remove_property(p).is_none() {
                bail!("node {} has no property {p} to delete", e.node);
            }
        }
        for (k, v) in &e.set {
            set_string(node, k, v);
        }
    }
    if psci {
        let cpus = tree
            .find_node_mut("/cpus")
            .context("the tree has no /cpus")?;
        // The 32-bit SMP method at /cpus would be used by nobody, but it names the spin table.
        cpus.remove_property("enable-method");
        let mut n = 0;
        for cpu in cpus.children_mut().filter(|c| c.name().starts_with("cpu@")) {
            set_string(cpu, "enable-method", "psci");
            cpu.remove_property("cpu-release-addr");
            n += 1;
        }
        if n == 0 {
            bail!("the tree's /cpus has no cpu@N nodes");
        }
        let psci = DeviceTreeNode::builder("psci")
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .property(DeviceTreeProperty::new_unchecked(
                "compatible",
                b"arm,psci-1.0\0arm,psci-0.2\0".to_vec(),
            ))
            .property(DeviceTreeProperty::new_unchecked("method", "hvc"))
            .build();
        tree.root.remove_child("psci");
        tree.root.add_child(psci);
    }
    Ok(tree.to_dtb())
}

fn set_string(node: &mut DeviceTreeNode, name: &str, value: &str) {
    match node.property_mut(name) {
        Some(p) => p.set_value(value),
        None => node.add_property(DeviceTreeProperty::new_unchecked(name, value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtoolkit::Property;

    fn tree() -> Vec<u8> {
        let mut t = DeviceTree::new();
        let cpu = |n: u32| {
            DeviceTreeNode::builder(format!("cpu@{n}"))
                .unwrap()
                .property(DeviceTreeProperty::new_unchecked(
                    "enable-method",
                    "spin-table",
                ))
                .property(DeviceTreeProperty::new_unchecked(
                    "cpu-release-addr",
                    0xd8u64 + 8 * n as u64,
                ))
                .build()
        };
        t.root.add_child(
            DeviceTreeNode::builder("cpus")
                .unwrap()
                .property(DeviceTreeProperty::new_unchecked(
                    "enable-method",
                    "brcm,bcm2836-smp",
                ))
                .child(cpu(0))
                .child(cpu(1))
                .build(),
        );
        t.root.add_child(
            DeviceTreeNode::builder("usb@7e980000")
                .unwrap()
                .property(DeviceTreeProperty::new_unchecked("dr_mode", "peripheral"))
                .property(DeviceTreeProperty::new_unchecked("vmmc-supply", 1u32))
                .build(),
        );
        t.to_dtb()
    }

    fn string(blob: &[u8], node: &str, prop: &str) -> Option<String> {
        let fdt = Fdt::new(blob).unwrap();
        let n = fdt.find_node(node)?;
        let v = n.property(prop)?.value().to_vec();
        Some(
            String::from_utf8(v)
                .unwrap()
                .trim_end_matches('\0')
                .to_owned(),
        )
    }

    #[test]
    fn edits_and_psci_are_applied() {
        let set = gw_board::DtbEdit {
            node: "/usb@7e980000".into(),
            disable: true,
            delete: vec!["vmmc-supply".into()],
            set: [("dr_mode".to_owned(), "host".to_owned())].into(),
        };
        let out = edited(&tree(), &[&set], true).unwrap();
        assert_eq!(string(&out, "/usb@7e980000", "dr_mode").unwrap(), "host");
        assert_eq!(string(&out, "/usb@7e980000", "status").unwrap(), "disabled");
        assert!(string(&out, "/usb@7e980000", "vmmc-supply").is_none());
        for c in ["/cpus/cpu@0", "/cpus/cpu@1"] {
            assert_eq!(string(&out, c, "enable-method").unwrap(), "psci");
            assert!(string(&out, c, "cpu-release-addr").is_none());
        }
        assert!(string(&out, "/cpus", "enable-method").is_none());
        assert_eq!(string(&out, "/psci", "method").unwrap(), "hvc");
        // The benign twin: no edits, no PSCI: the spin table stays.
        let same = edited(&tree(), &[], false).unwrap();
        assert_eq!(
            string(&same, "/cpus/cpu@1", "enable-method").unwrap(),
            "spin-table"
        );
        assert!(string(&same, "/psci", "method").is_none());
    }

    #[test]
    fn an_edit_of_what_is_not_there_is_an_error() {
        let missing = gw_board::DtbEdit {
            node: "/nowhere".into(),
            disable: true,
            delete: vec![],
            set: Default::default(),
        };
        assert!(
            edited(&tree(), &[&missing], false)
                .unwrap_err()
                .to_string()
                .contains("no node /nowhere")
        );
        let prop = gw_board::DtbEdit {
            node: "/usb@7e980000".into(),
            disable: false,
            delete: vec!["nothing".into()],
            set: Default::default(),
        };
        assert!(edited(&tree(), &[&prop], false).is_err());
    }
}
