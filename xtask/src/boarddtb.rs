//! The device tree an image ships for a board that boots from a file (the Raspberry Pis):
//! Debian's tree from the kernel package, edited as the board data says (`[dtb] edits`, and
//! QEMU's `[qemu] dtb_edits` for the tree the QEMU tests boot), plus what the hypervisor
//! implies: where it releases the secondaries from the loader's spin table itself, the guest's
//! CPUs are started through PSCI, which the hypervisor answers.

use std::path::Path;

use anyhow::{Context, Result, bail};
use dtoolkit::{
    Node,
    fdt::Fdt,
    model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty},
};

/// `blob` with a 64-byte `/chosen/rng-seed`, as the Raspberry Pi firmware passes one: QEMU's
/// model of the board passes none, so the image's QEMU tree carries it and every boot gets
/// fresh bytes in its place (`reseed`).
pub fn with_rng_seed(blob: &[u8]) -> Result<Vec<u8>> {
    let fdt = Fdt::new(blob).map_err(|e| anyhow::anyhow!("not a device tree: {e}"))?;
    let mut tree = DeviceTree::from_fdt(&fdt);
    if tree.find_node_mut("/chosen").is_none() {
        let chosen = DeviceTreeNode::builder("chosen")
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .build();
        tree.root.add_child(chosen);
    }
    let chosen = tree.find_node_mut("/chosen").context("/chosen")?;
    let mut seed = vec![0u8; 64];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("random seed: {e}"))?;
    chosen.remove_property("rng-seed");
    chosen.add_property(DeviceTreeProperty::new_unchecked("rng-seed", seed));
    Ok(tree.to_dtb())
}

/// Fresh random bytes in place of the loader's seeds in `blob` (each boot's, as a firmware
/// makes them); how many seeds there were.
pub fn reseed(blob: &mut [u8]) -> Result<usize> {
    let mut failed = None;
    let n = gatewarden_hv::dtb::refill_seeds(blob, |seed| {
        if let Err(e) = getrandom::fill(seed) {
            failed = Some(e);
        }
    })
    .map_err(|e| anyhow::anyhow!("not a device tree: {e:?}"))?;
    match failed {
        Some(e) => bail!("random seed: {e}"),
        None => Ok(n),
    }
}

/// `args` (a QEMU command line) with its `-dtb` file copied, with fresh seeds, to
/// `qemu-boot.dtb` beside it: each boot's seeds differ, as a firmware's do.
pub fn fresh_seeds(args: &[String]) -> Result<Vec<String>> {
    let mut out = args.to_vec();
    if let Some(i) = args.iter().position(|a| a == "-dtb")
        && let Some(file) = args.get(i + 1)
    {
        let mut blob = std::fs::read(file).with_context(|| format!("reading {file}"))?;
        reseed(&mut blob)?;
        let copy = Path::new(file).with_file_name("qemu-boot.dtb");
        std::fs::write(&copy, &blob).with_context(|| format!("writing {}", copy.display()))?;
        out[i + 1] = copy.display().to_string();
    }
    Ok(out)
}

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
    fn the_qemu_tree_gets_a_seed_that_each_boot_replaces() {
        let t = with_rng_seed(&tree()).unwrap();
        let places = gatewarden_hv::dtb::seed_places(&t).unwrap();
        let (off, len) = places[0].expect("rng-seed");
        assert_eq!(len, 64);
        let mut again = t.clone();
        assert_eq!(reseed(&mut again).unwrap(), 1);
        assert_ne!(t[off..off + len], again[off..off + len]);
        // Only the seed's bytes change.
        assert_eq!(t[..off], again[..off]);
        assert_eq!(t[off + len..], again[off + len..]);
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
