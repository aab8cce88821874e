//! The flashable SD card image of a Raspberry Pi board (`gatewarden-<board>.img`): an MBR disk
//! with a FAT32 boot partition, which the Pi's firmware reads (Debian's `raspi-firmware`,
//! `config.txt`, the hypervisor as the kernel, the guest bundle as its initramfs, the board's
//! device tree), and an ext4 partition for the gateway's persistent state. The QEMU tests boot
//! this very image as the board's SD card (docs/flashing.md).

use std::{
    fs::File,
    io::{Seek, Write},
    path::Path,
    process::Command,
};

use anyhow::{Context, Result, bail};

/// The whole image (QEMU wants an SD card whose size is a power of two).
pub const IMAGE_SIZE: u64 = 512 << 20;
/// The boot partition: from 1 MiB (SD erase-block aligned), 256 MiB.
pub const BOOT_START: u64 = 1 << 20;
/// Size of the boot partition.
pub const BOOT_SIZE: u64 = 256 << 20;
/// The state partition: the rest.
pub const STATE_START: u64 = BOOT_START + BOOT_SIZE;
/// The boot partition's FAT volume label.
pub const BOOT_LABEL: &[u8; 11] = b"GW-BOOT    ";
/// The state partition's ext4 label.
pub const STATE_LABEL: &str = "gw-state";

const SECTOR: u64 = 512;

/// The firmware's `config.txt` for a board booting `hv.bin` with the bundle as its initramfs
/// and the tree `dtb`.
pub fn config_txt(board: &str, dtb: &str) -> String {
    format!(
        "# Gatewarden for {board}, written by `cargo xtask image --board {board}` (docs/flashing.md).\n\
         # The firmware loads the hypervisor as the kernel at 0x80000 and enters it at EL2 with\n\
         # the device tree in x0; the other cores wait in the default armstub's spin table.\n\
         arm_64bit=1\n\
         kernel=hv.bin\n\
         # The guest bundle (Debian's kernel and the gateway's initramfs) travels as the initrd.\n\
         initramfs bundle.bin followkernel\n\
         device_tree={dtb}\n\
         # The mini-UART on GPIO 14/15: the hypervisor's console, shared with the guest.\n\
         enable_uart=1\n\
         # No overlays: the hypervisor measures the tree the firmware passes.\n\
         disable_overscan=1\n\
         disable_splash=1\n"
    )
}

/// Write the image to `out`: the boot partition with `files` (path, bytes; `/` separates
/// directories), and an empty ext4 state partition.
pub fn write(out: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    let total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    if total > BOOT_SIZE * 9 / 10 {
        bail!(
            "the boot files take {} MiB, more than the boot partition's {} MiB allows",
            total >> 20,
            BOOT_SIZE >> 20
        );
    }
    let tmp = out.with_extension("img.partial");
    let mut f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.set_len(IMAGE_SIZE)?;
    let mut sig = [0u8; 4];
    getrandom::fill(&mut sig).map_err(|e| anyhow::anyhow!("disk signature: {e}"))?;
    let mut mbr = mbrman::MBR::new_from(&mut f, SECTOR as u32, sig)
        .map_err(|e| anyhow::anyhow!("partition table: {e}"))?;
    let entry = |boot: bool, sys: u8, start: u64, size: u64| mbrman::MBRPartitionEntry {
        boot: if boot { 0x80 } else { 0 },
        first_chs: mbrman::CHS::empty(),
        sys,
        last_chs: mbrman::CHS::empty(),
        starting_lba: (start / SECTOR) as u32,
        sectors: (size / SECTOR) as u32,
    };
    // 0x0c: FAT32 with LBA, what the Pi's boot ROM and firmware look for; 0x83: Linux.
    mbr[1] = entry(true, 0x0c, BOOT_START, BOOT_SIZE);
    mbr[2] = entry(false, 0x83, STATE_START, IMAGE_SIZE - STATE_START);
    mbr.write_into(&mut f)
        .map_err(|e| anyhow::anyhow!("writing the partition table: {e}"))?;

    {
        let slice = fscommon::StreamSlice::new(&mut f, BOOT_START, BOOT_START + BOOT_SIZE)?;
        let mut disk = fscommon::BufStream::new(slice);
        fatfs::format_volume(
            &mut disk,
            fatfs::FormatVolumeOptions::new()
                .fat_type(fatfs::FatType::Fat32)
                .volume_label(*BOOT_LABEL),
        )
        .context("formatting the boot partition (FAT32)")?;
        disk.rewind()?;
        let fs = fatfs::FileSystem::new(disk, fatfs::FsOptions::new())
            .context("opening the boot partition")?;
        for (path, bytes) in files {
            let mut dir = fs.root_dir();
            let mut parts: Vec<&str> = path.split('/').collect();
            let name = parts.pop().context("an empty file name")?;
            for d in parts {
                dir = match dir.open_dir(d) {
                    Ok(d) => d,
                    Err(_) => dir.create_dir(d)?,
                };
            }
            let mut file = dir
                .create_file(name)
                .with_context(|| format!("creating {path} on the boot partition"))?;
            file.truncate()?;
            file.write_all(bytes)
                .with_context(|| format!("writing {path} on the boot partition"))?;
        }
        fs.unmount().context("closing the boot partition")?;
    }
    f.sync_all()?;
    drop(f);

    // The state partition: ext4, formatted in place inside the image file.
    let status = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", STATE_LABEL])
        .arg("-E")
        .arg(format!("offset={STATE_START}"))
        .arg(&tmp)
        .arg(format!("{}k", (IMAGE_SIZE - STATE_START) >> 10))
        .status()
        .context("running mke2fs (e2fsprogs)")?;
    if !status.success() {
        bail!("mke2fs failed on the state partition");
    }
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_has_both_partitions_and_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("t.img");
        let files = vec![
            (
                "config.txt".to_owned(),
                config_txt("rpi4", "b.dtb").into_bytes(),
            ),
            ("gatewarden/README.txt".to_owned(), b"hello".to_vec()),
            ("hv.bin".to_owned(), vec![7u8; 300_000]),
        ];
        write(&img, &files).unwrap();
        let mut f = File::open(&img).unwrap();
        assert_eq!(f.metadata().unwrap().len(), IMAGE_SIZE);
        let mbr = mbrman::MBR::read_from(&mut f, SECTOR as u32).unwrap();
        assert_eq!(mbr[1].sys, 0x0c);
        assert_eq!(u64::from(mbr[1].starting_lba) * SECTOR, BOOT_START);
        assert_eq!(mbr[2].sys, 0x83);
        assert_eq!(
            u64::from(mbr[2].starting_lba + mbr[2].sectors) * SECTOR,
            IMAGE_SIZE
        );
        let slice = fscommon::StreamSlice::new(f, BOOT_START, BOOT_START + BOOT_SIZE).unwrap();
        let fs = fatfs::FileSystem::new(slice, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
        let mut hv = Vec::new();
        std::io::Read::read_to_end(&mut fs.root_dir().open_file("hv.bin").unwrap(), &mut hv)
            .unwrap();
        assert_eq!(hv, files[2].1);
        assert!(fs.root_dir().open_file("gatewarden/README.txt").is_ok());
        // The ext4 superblock's magic, 1080 bytes into the state partition.
        let raw = std::fs::read(&img).unwrap();
        let at = STATE_START as usize + 1080;
        assert_eq!(raw[at..at + 2], [0x53, 0xef]);
    }
}
