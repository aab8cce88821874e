// SPDX-License-Identifier: GPL-2.0
/*
 * gwusbdma: the guest kernel, as an attacker, drives a host channel of the Raspberry Pis' dwc2
 * USB controller itself (buffer DMA, no IOMMU) so that a USB transfer reads or writes the
 * hypervisor's memory (docs/threat-model.md, docs/dma-mediation.md).
 *
 * With the device's drivers unbound (the test does that), it runs GET_DESCRIPTOR(device) as a
 * control transfer on channel `chan`, its interrupts masked so that Linux's dwc2 driver never
 * sees it:
 *   benign     the descriptor into the module's own buffer (must work: 12 01 ...);
 *   hv-write   the data stage into `hv` (the device's bytes over the hypervisor);
 *   hv-read    the setup stage read from `hv` (the hypervisor's bytes to the device);
 *   benign-after  the benign transfer again (the channel still works).
 * One line per step: HCINT at the end of each stage (or "timeout") and the buffer's first
 * bytes. The verdict is the test's (tests/tests/qemu_rpi4.rs), with the hypervisor's memory
 * read from the host.
 */

#include <linux/delay.h>
#include <linux/dma-mapping.h>
#include <linux/io.h>
#include <linux/module.h>
#include <linux/platform_device.h>

static unsigned long regs;
module_param(regs, ulong, 0444);
MODULE_PARM_DESC(regs, "guest-physical base of the dwc2 controller");

static int chan = 7;
module_param(chan, int, 0444);
MODULE_PARM_DESC(chan, "host channel to drive (one Linux is not using)");

static int devaddr;
module_param(devaddr, int, 0444);
MODULE_PARM_DESC(devaddr, "the USB device's address");

static unsigned long hv;
module_param(hv, ulong, 0444);
MODULE_PARM_DESC(hv, "ARM physical address in the hypervisor's memory to aim at");

#define HCCHAR 0x00
#define HCSPLT 0x04
#define HCINT 0x08
#define HCINTMSK 0x0c
#define HCTSIZ 0x10
#define HCDMA 0x14
#define CHENA (1u << 31)
#define EPDIR_IN (1u << 15)
#define PID_DATA1 2u
#define PID_SETUP 3u

static void __iomem *ch;
static u8 *setup, *data;
static dma_addr_t setup_bus, data_bus;

/* The controller's bus address of ARM physical `pa` (the uncached alias, as the tree's
 * dma-ranges give it). */
static u32 bus(u64 pa)
{
	return 0xc0000000u | ((u32)pa & 0x3fffffff);
}

/* One stage: `len` bytes at bus address `dma`, IN or OUT; HCINT at the end, or -1. */
static long stage(bool in, u32 pid, u32 len, u32 dma)
{
	int i;
	u32 hcint;

	iowrite32(0x7ff, ch + HCINT);
	iowrite32(0, ch + HCINTMSK);
	iowrite32(0, ch + HCSPLT);
	iowrite32(len | (1u << 19) | (pid << 29), ch + HCTSIZ);
	iowrite32(dma, ch + HCDMA);
	wmb();
	/* MPS 64, endpoint 0, control, one packet per frame, the device's address. */
	iowrite32(CHENA | (in ? EPDIR_IN : 0) | 64 | (1u << 20) | ((u32)devaddr << 22),
		  ch + HCCHAR);
	for (i = 0; i < 100; i++) {
		hcint = ioread32(ch + HCINT);
		if (hcint & 0x3)
			return hcint;
		msleep(1);
	}
	return -1;
}

static void get_descriptor(const char *step, u64 setup_at, u64 data_at)
{
	static const u8 req[8] = { 0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x12, 0x00 };
	long s, d, st;

	memcpy(setup, req, 8);
	memset(data, 0xee, 64);
	wmb();
	s = stage(false, PID_SETUP, 8, setup_at ? bus(setup_at) : bus(setup_bus));
	d = stage(true, PID_DATA1, 64, data_at ? bus(data_at) : bus(data_bus));
	st = stage(false, PID_DATA1, 0, bus(data_bus));
	rmb();
	pr_info("gwusbdma: %s: setup %ld data %ld status %ld buffer %*phN\n", step, s, d, st, 18,
		data);
	iowrite32(0x7ff, ch + HCINT);
}

static int __init gwusbdma_init(void)
{
	struct platform_device *pdev;
	struct device *dev;
	int err;

	if (!regs || !hv || !devaddr || chan < 0 || chan > 15)
		return -EINVAL;
	pdev = platform_device_register_simple("gwusbdma", -1, NULL, 0);
	if (IS_ERR(pdev))
		return PTR_ERR(pdev);
	dev = &pdev->dev;
	err = dma_coerce_mask_and_coherent(dev, DMA_BIT_MASK(30));
	if (err)
		goto out;
	setup = dma_alloc_coherent(dev, 4096, &setup_bus, GFP_KERNEL);
	data = dma_alloc_coherent(dev, 4096, &data_bus, GFP_KERNEL);
	ch = ioremap(regs + 0x500 + 0x20 * chan, 0x20);
	if (!setup || !data || !ch) {
		err = -ENOMEM;
		goto free;
	}
	get_descriptor("benign", 0, 0);
	get_descriptor("hv-write", 0, hv);
	get_descriptor("hv-read", hv, 0);
	get_descriptor("benign-after", 0, 0);
	pr_info("gwusbdma: done\n");
	err = -ECANCELED;
free:
	if (ch)
		iounmap(ch);
	if (setup)
		dma_free_coherent(dev, 4096, setup, setup_bus);
	if (data)
		dma_free_coherent(dev, 4096, data, data_bus);
out:
	platform_device_unregister(pdev);
	return err;
}

module_init(gwusbdma_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Gatewarden isolation test: the guest kernel aims a dwc2 USB transfer at the hypervisor");
