//! A scan of an aarch64 ELF's code for instructions of the Armv8 Cryptographic Extension, which
//! some SoCs (the Raspberry Pis' BCM2837 and BCM2711) lack although QEMU's models of them run
//! them.

use object::{Object, ObjectSection, SectionKind};

/// (value, mask, kind) of each instruction class: the register fields masked out.
const CRYPTO: &[(u32, u32, &str)] = &[
    // AESE, AESD, AESMC, AESIMC.
    (0x4e28_4800, 0xffff_cc00, "aes"),
    // SHA1C, SHA1P, SHA1M, SHA1SU0.
    (0x5e00_0000, 0xffe0_cc00, "sha1"),
    // SHA1H, SHA1SU1.
    (0x5e28_0800, 0xffff_ec00, "sha1"),
    // SHA256H, SHA256H2, SHA256SU1.
    (0x5e00_4000, 0xffe0_cc00, "sha256"),
    (0x5e00_6000, 0xffe0_fc00, "sha256"),
    // SHA256SU0.
    (0x5e28_2800, 0xffff_fc00, "sha256"),
    // SHA512H, SHA512H2, SHA512SU1.
    (0xce60_8000, 0xffe0_f000, "sha512"),
    // SHA512SU0.
    (0xcec0_8000, 0xffff_fc00, "sha512"),
];

/// The class of instruction word `w`, if it is a Cryptographic Extension instruction.
pub fn crypto_kind(w: u32) -> Option<&'static str> {
    CRYPTO
        .iter()
        .find(|&&(v, m, _)| w & m == v)
        .map(|&(_, _, k)| k)
}

/// Every Cryptographic Extension instruction in the executable sections of `elf`: its address
/// and class.
pub fn crypto_instructions(elf: &[u8]) -> Result<Vec<(u64, &'static str)>, object::Error> {
    let file = object::File::parse(elf)?;
    let mut out = Vec::new();
    for s in file.sections() {
        if s.kind() != SectionKind::Text {
            continue;
        }
        let data = s.data()?;
        for (i, w) in data.chunks_exact(4).enumerate() {
            let w = u32::from_le_bytes(w.try_into().unwrap());
            if let Some(k) = crypto_kind(w) {
                out.push((s.address() + 4 * i as u64, k));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings_are_classified() {
        // sha256h q0, q1, v2.4s; sha256su0 v0.4s, v1.4s; aese v0.16b, v1.16b; sha1h s0, s1;
        // sha512h q0, q1, v2.2d.
        assert_eq!(crypto_kind(0x5e02_4020), Some("sha256"));
        assert_eq!(crypto_kind(0x5e28_2820), Some("sha256"));
        assert_eq!(crypto_kind(0x4e28_4820), Some("aes"));
        assert_eq!(crypto_kind(0x5e28_0820), Some("sha1"));
        assert_eq!(crypto_kind(0xce62_8020), Some("sha512"));
        // Not crypto: nop, ret, add x0, x0, #1, ldr x0, [x1].
        for w in [0xd503_201f, 0xd65f_03c0, 0x9100_0400, 0xf940_0020] {
            assert_eq!(crypto_kind(w), None, "{w:#x}");
        }
    }
}
