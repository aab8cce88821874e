//! Image header and entry points.
//!
//! The image starts with an arm64 Linux `Image` header, so QEMU `-kernel`, U-Boot `booti` and
//! the Raspberry Pi firmware load it like a kernel. Entered at EL2 (or EL3, which drops to EL2)
//! with the DTB address in `x0`. Secondary CPUs enter at `secondary_entry` through PSCI
//! CPU_ON with their CPU index as context.

core::arch::global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    b       primary_entry
    .long   0
    .quad   0x80000                 // text_offset
    .quad   __image_size            // image_size, bss and stacks included
    .quad   0x2                     // flags: little endian, 4 KiB pages
    .quad   __measured_size         // res2: bytes measured into PCR 1 (docs/boot.md)
    .quad   0
    .quad   0
    .ascii  "ARM\x64"
    .long   0

primary_entry:
    mov     x19, x0
    mrs     x1, CurrentEL
    lsr     x1, x1, #2
    cmp     x1, #3
    b.ne    1f
    // EL3 (a Raspberry Pi ELF boot, or QEMU with secure=on): non-secure EL2, AArch64, HVC on.
    mov     x1, #((1 << 0) | (1 << 8) | (1 << 10))
    msr     scr_el3, x1
    mov     x1, #0x3c9
    msr     spsr_el3, x1
    adr     x1, 1f
    msr     elr_el3, x1
    eret
1:
    mrs     x1, CurrentEL
    lsr     x1, x1, #2
    cmp     x1, #2
    b.ne    park
    // Clear .bss before any Rust code runs.
    ldr     x1, =__bss_start
    ldr     x2, =__bss_end
2:
    cmp     x1, x2
    b.hs    3f
    str     xzr, [x1], #8
    b       2b
3:
    ldr     x1, =__primary_stack_top
    mov     sp, x1
    mov     x0, x19
    bl      hv_primary_main
park:
    wfe
    b       park

    .section .text
    .global spin_entry
// Released from the loader's spin table (x0-x3 = 0): the CPU's index from MPIDR.
spin_entry:
    mrs     x0, mpidr_el1
    and     x0, x0, #0xff
    .global secondary_entry
secondary_entry:
    // x0 = CPU index (1..MAX_CPUS). Stack i sits above the primary's.
    ldr     x1, =__primary_stack_top
    ldr     x2, =__secondary_stack_size
    mul     x3, x0, x2
    add     x1, x1, x3
    mov     sp, x1
    bl      hv_secondary_main
    b       park
"#
);

unsafe extern "C" {
    /// Secondary entry point (PSCI CPU_ON target).
    pub fn secondary_entry();
    /// Entry of a secondary released from the loader's spin table.
    pub fn spin_entry();
    /// Start of the loaded image.
    pub static __image_start: u8;
    /// End of the image in memory (bss and stacks included).
    pub static __image_end: u8;
    static __stacks_start: u8;
    static __primary_stack_top: u8;
    static __secondary_stack_size: u8;
    static __guard_size: u8;
}

/// CPU `idx`'s hypervisor stack, `[low, top)`, above its unmapped guard page: the primary's for
/// CPU 0, else the `idx`-th secondary stack above it (link.ld; `secondary_entry` computes the
/// same top). The EL2 map, the guest entry and every trap's stack check take it from here.
pub fn cpu_stack(idx: u64) -> (u64, u64) {
    let start = core::ptr::addr_of!(__stacks_start) as u64;
    let primary_top = core::ptr::addr_of!(__primary_stack_top) as u64;
    // The linker symbols' addresses are the stride and the guard page's size (absolute
    // symbols).
    let stride = core::ptr::addr_of!(__secondary_stack_size) as u64;
    let guard = core::ptr::addr_of!(__guard_size) as u64;
    match idx {
        0 => (start + guard, primary_top),
        k => (
            primary_top + (k - 1) * stride + guard,
            primary_top + k * stride,
        ),
    }
}

/// Physical address of `spin_entry` (identity-mapped).
pub fn spin_entry_address() -> u64 {
    spin_entry as *const () as usize as u64
}

/// Physical address of `secondary_entry` (identity-mapped).
pub fn secondary_entry_address() -> u64 {
    secondary_entry as *const () as usize as u64
}
