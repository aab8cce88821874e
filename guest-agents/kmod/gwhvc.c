// SPDX-License-Identifier: GPL-2.0
/*
 * gwhvc: Gatewarden hypercalls from the guest kernel (HVC #0 at EL1).
 *
 * Guest user space reaches the hypervisor through the trapped call window (docs/abi.md); this
 * module is the EL1 path. On load it
 *   1. checks that it runs under gatewarden-hv (register-only VERSION),
 *   2. times `bench` register-only VERSION calls in counter ticks (the null-hypercall round
 *      trip that docs/benchmarks.md reports), and
 *   3. makes `malformed` calls that each break one rule of the ABI (unknown function, buffers
 *      unmapped, read-only, overlapping, oversized, wrapping, in hypervisor memory, or behind
 *      page tables that lead through a device address: `walk_at`) and
 *      checks that every one is refused with the error code its rule calls for, then that a good
 *      call still works.
 * It prints one line per step and fails to load (-EIO) if any step fails, so `insmod`'s exit
 * status is the verdict. With `poke` it does only one thing: flip a bit of the byte at that
 * guest-physical address through the kernel's linear map, as a hostile kernel patching a
 * process's code page would (`gw-dp-rogue --patch kernel`). Built against Debian's headers by `cargo xtask image`.
 */

#include <linux/arm-smccc.h>
#include <linux/io.h>
#include <linux/irqflags.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/random.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/vmalloc.h>
#include <asm/arch_timer.h>

/* ABI (hypervisor/abi/src/lib.rs): SMCCC vendor-hypervisor range, function numbers, errors. */
#define GW_FN(n)		(0xC6000000UL | (n))
#define GW_VERSION		0x00
#define GW_PCR_READ		0x11
#define GW_MAX_REQUEST		(64 * 1024 + 512)
#define GW_NOT_SUPPORTED	(-1L)
#define GW_INVALID_PARAMETER	(-2L)
#define GW_BAD_ADDRESS		(-4L)
#define GW_MIN_ERROR		(-18L)

static unsigned int bench = 10000;
module_param(bench, uint, 0444);
MODULE_PARM_DESC(bench, "register-only VERSION calls to time (0: none)");

static unsigned int malformed = 1000;
module_param(malformed, uint, 0444);
MODULE_PARM_DESC(malformed, "malformed calls to make, each must be refused (0: none)");

static unsigned long hv_phys;
module_param(hv_phys, ulong, 0444);
MODULE_PARM_DESC(hv_phys, "a physical address inside hypervisor memory, for the calls that point there (0: skip them)");

static unsigned long poke;
module_param(poke, ulong, 0444);
MODULE_PARM_DESC(poke, "only flip bit 0 of the byte at this guest-physical RAM address (0: skip)");

/* A page the module only reads: once loaded it is mapped read-only (STRICT_MODULE_RWX). */
static const u8 ro_page[PAGE_SIZE] __aligned(PAGE_SIZE) = { 1 };

static unsigned long gw_call(unsigned long fn, unsigned long a1, unsigned long a2,
			     unsigned long a3, unsigned long a4, struct arm_smccc_res *res)
{
	arm_smccc_1_1_hvc(fn, a1, a2, a3, a4, res);
	return res->a0;
}

static int cmp_u64(const void *a, const void *b)
{
	u64 x = *(const u64 *)a, y = *(const u64 *)b;

	return x < y ? -1 : x > y;
}

static int run_bench(void)
{
	struct arm_smccc_res res;
	unsigned long flags;
	unsigned int i;
	u64 *ticks, t0, t1;

	if (!bench)
		return 0;
	ticks = kvmalloc_array(bench, sizeof(*ticks), GFP_KERNEL);
	if (!ticks)
		return -ENOMEM;
	for (i = 0; i < bench; i++) {
		/* Interrupts off so a timer tick is not counted as hypercall time. */
		local_irq_save(flags);
		t0 = __arch_counter_get_cntvct();
		gw_call(GW_FN(GW_VERSION), 0, 0, 0, 0, &res);
		t1 = __arch_counter_get_cntvct();
		local_irq_restore(flags);
		if (res.a0) {
			pr_err("gwhvc: null HVC %u returned %ld\n", i, (long)res.a0);
			kvfree(ticks);
			return -EIO;
		}
		ticks[i] = t1 - t0;
		if ((i & 255) == 255)
			cond_resched();
	}
	sort(ticks, bench, sizeof(*ticks), cmp_u64, NULL);
	pr_info("gwhvc: null HVC x%u: median %llu p99 %llu min %llu ticks, counter %u Hz\n",
		bench, ticks[bench / 2], ticks[(u64)bench * 99 / 100], ticks[0],
		arch_timer_get_cntfrq());
	kvfree(ticks);
	return 0;
}

/* Kinds of malformed call; each breaks one rule. */
enum bad_kind {
	BAD_FUNCTION,		/* unknown Gatewarden function number */
	BAD_NULL_REQUEST,	/* request in the unmapped page at 0 */
	BAD_GUARD_CROSSING,	/* request running off a vmalloc area into its guard page */
	BAD_READ_ONLY_RESPONSE,	/* response buffer the kernel maps read-only */
	BAD_OVERLAP,		/* request and response overlap */
	BAD_OVERSIZED,		/* lengths over the ABI maximum */
	BAD_WRAPPING,		/* address + length wraps around */
	BAD_HYPERVISOR,		/* buffer mapped onto hypervisor physical memory */
	BAD_DEVICE_WALK,	/* buffer whose page-table walk goes through a device address */
	BAD_KINDS,
};

static const char *const bad_names[BAD_KINDS] = {
	"unknown function", "null request", "guard-page crossing", "read-only response",
	"overlapping buffers", "oversized", "wrapping", "hypervisor memory",
	"page tables at a device",
};

static unsigned long walk_at[16];
static int n_walk_at;
module_param_array(walk_at, ulong, &n_walk_at, 0444);
MODULE_PARM_DESC(walk_at, "guest-physical device addresses (holes and devices) to aim a page-table walk at (none: skip that kind)");

/*
 * Make a call while this CPU's TTBR0_EL1 is a level-0 table whose first entry points the next
 * level at `dev` (a device address): the hypervisor's translation of a buffer at a low VA then
 * walks through the device. Interrupts stay off meanwhile, so nothing else runs on the
 * borrowed TTBR0; the TLB is flushed on both sides.
 */
static unsigned long call_through_device(u64 *l0, unsigned long dev, unsigned long fn,
					 unsigned long a1, unsigned long a2, unsigned long a3,
					 unsigned long a4, struct arm_smccc_res *res)
{
	unsigned long flags, saved, err;

	l0[0] = (dev & PAGE_MASK) | 3;
	dsb(ishst);
	local_irq_save(flags);
	saved = read_sysreg(ttbr0_el1);
	write_sysreg(virt_to_phys(l0), ttbr0_el1);
	isb();
	asm volatile("tlbi vmalle1\n\tdsb nsh\n\tisb" ::: "memory");
	err = gw_call(fn, a1, a2, a3, a4, res);
	write_sysreg(saved, ttbr0_el1);
	isb();
	asm volatile("tlbi vmalle1\n\tdsb nsh\n\tisb" ::: "memory");
	local_irq_restore(flags);
	return err;
}

/*
 * The error each kind must get (hypervisor/abi/src/regs.rs `check_buffers`, then the copy-in
 * and the writable check of the response): a call refused for another reason means the rule
 * under test was never checked.
 */
static long expected_error(enum bad_kind kind)
{
	switch (kind) {
	case BAD_FUNCTION:
		return GW_NOT_SUPPORTED;
	case BAD_OVERSIZED:
		return GW_INVALID_PARAMETER;
	default:
		return GW_BAD_ADDRESS;
	}
}

/* A known function number other than VERSION, or VERSION itself. */
static unsigned long any_function(void)
{
	static const u8 known[] = { 0x00, 0x10, 0x11, 0x12, 0x13, 0x20, 0x21, 0x22,
				    0x30, 0x31, 0x40, 0x41 };

	return GW_FN(known[get_random_u32() % ARRAY_SIZE(known)]);
}

/*
 * A well-formed request in `buf` for a function with no side effects, VERSION or PCR_READ of
 * PCR 0 (postcard: the variant index, then the fields), for calls where only the response
 * buffer is wrong.
 */
static void harmless_request(u8 *buf, unsigned long *fn, unsigned long *addr, unsigned long *len)
{
	bool version = get_random_u32() & 1;

	*fn = GW_FN(version ? GW_VERSION : GW_PCR_READ);
	buf[0] = version ? 0x00 : 0x02;
	buf[1] = 0;
	*addr = (unsigned long)buf;
	*len = version ? 1 : 2;
}

static int run_malformed(void)
{
	unsigned int counts[BAD_KINDS] = { 0 }, refused = 0, accepted = 0, wrong_code = 0, i;
	struct arm_smccc_res res;
	void __iomem *hv = NULL;
	u8 *buf, *vbuf;
	u64 *l0;
	int kinds = BAD_KINDS;
	int ret = 0;

	if (!malformed)
		return 0;
	buf = kzalloc(2 * PAGE_SIZE, GFP_KERNEL);
	vbuf = vmalloc(PAGE_SIZE);
	l0 = (u64 *)get_zeroed_page(GFP_KERNEL);
	if (!buf || !vbuf || !l0) {
		ret = -ENOMEM;
		goto out;
	}
	if (hv_phys)
		hv = ioremap(hv_phys & PAGE_MASK, PAGE_SIZE);

	for (i = 0; i < malformed; i++) {
		enum bad_kind kind;
		unsigned long dev = 0;

		/* Kinds without their parameter (hv_phys, walk_at) are not made. */
		do {
			kind = get_random_u32() % kinds;
		} while ((kind == BAD_HYPERVISOR && !hv) || (kind == BAD_DEVICE_WALK && !n_walk_at));
		unsigned long len = 1 + get_random_u32() % 256, fn = any_function();
		unsigned long a1, a2, a3 = (unsigned long)buf + PAGE_SIZE, a4 = PAGE_SIZE;
		unsigned long err;

		switch (kind) {
		case BAD_FUNCTION: {
			/* 0x01-0x0f and 0x50-0xffff are unassigned. */
			u32 n = get_random_u32() & 1 ? 1 + get_random_u32() % 15
						     : 0x50 + get_random_u32() % 0xffb0;
			fn = GW_FN(n);
			a1 = (unsigned long)buf;
			a2 = len;
			break;
		}
		case BAD_NULL_REQUEST:
			a1 = get_random_u32() % PAGE_SIZE;
			a2 = len;
			break;
		case BAD_GUARD_CROSSING: {
			unsigned long tail = 1 + get_random_u32() % 64;

			a1 = (unsigned long)vbuf + PAGE_SIZE - tail;
			a2 = tail + 1 + get_random_u32() % 256;
			memset(vbuf, 0, PAGE_SIZE);
			break;
		}
		case BAD_READ_ONLY_RESPONSE:
			/* Only the response buffer is wrong. */
			harmless_request(buf, &fn, &a1, &a2);
			a3 = (unsigned long)ro_page;
			a4 = 256 + get_random_u32() % (PAGE_SIZE - 256);
			break;
		case BAD_OVERLAP: {
			unsigned long off = get_random_u32() % 128;

			a1 = (unsigned long)buf + off;
			a2 = len;
			a3 = (unsigned long)buf + off + get_random_u32() % len;
			a4 = 1 + get_random_u32() % 256;
			break;
		}
		case BAD_OVERSIZED:
			a1 = (unsigned long)buf;
			a2 = GW_MAX_REQUEST + 1 + (get_random_u32() % (1U << 20));
			if (get_random_u32() & 1) {
				a2 = len;
				a4 = GW_MAX_REQUEST + 1 + (get_random_u32() % (1U << 20));
			}
			break;
		case BAD_WRAPPING:
			a1 = ~0UL - get_random_u32() % 64;
			a2 = 64 + len;
			break;
		case BAD_HYPERVISOR:
			a1 = (unsigned long)hv + get_random_u32() % (PAGE_SIZE - 256);
			a2 = len;
			if (get_random_u32() & 1) {
				/* well-formed request, response into hypervisor memory */
				harmless_request(buf, &fn, &a1, &a2);
				a3 = (unsigned long)hv;
			}
			break;
		case BAD_DEVICE_WALK:
			dev = walk_at[get_random_u32() % n_walk_at];
			/* The request or (with a good request) the response at a low VA. */
			a1 = 0x1000 + get_random_u32() % 0x100000;
			a2 = len;
			if (get_random_u32() & 1) {
				harmless_request(buf, &fn, &a1, &a2);
				a3 = 0x1000 + get_random_u32() % 0x100000;
			}
			break;
		default:
			continue;
		}
		if (kind == BAD_DEVICE_WALK)
			err = call_through_device(l0, dev, fn, a1, a2, a3, a4, &res);
		else
			err = gw_call(fn, a1, a2, a3, a4, &res);
		if ((long)err == expected_error(kind)) {
			refused++;
			counts[kind]++;
		} else if ((long)err < 0 && (long)err >= GW_MIN_ERROR) {
			wrong_code++;
			pr_err("gwhvc: malformed call refused with another code (%s): fn %#lx x1 %#lx x2 %#lx x3 %#lx x4 %#lx -> %ld, expected %ld\n",
			       bad_names[kind], fn, a1, a2, a3, a4, (long)err, expected_error(kind));
		} else {
			accepted++;
			pr_err("gwhvc: malformed call accepted (%s): fn %#lx x1 %#lx x2 %#lx x3 %#lx x4 %#lx -> %ld\n",
			       bad_names[kind], fn, a1, a2, a3, a4, (long)err);
		}
		if ((i & 255) == 255)
			cond_resched();
	}
	pr_info("gwhvc: malformed HVC x%u: %u refused, %u accepted, %u refused with another code (%s %u, %s %u, %s %u, %s %u, %s %u, %s %u, %s %u, %s %u, %s %u)\n",
		malformed, refused, accepted, wrong_code,
		bad_names[0], counts[0], bad_names[1], counts[1], bad_names[2], counts[2],
		bad_names[3], counts[3], bad_names[4], counts[4], bad_names[5], counts[5],
		bad_names[6], counts[6], bad_names[7], counts[7], bad_names[8], counts[8]);
	if (accepted || wrong_code)
		ret = -EIO;
out:
	if (hv)
		iounmap(hv);
	vfree(vbuf);
	kfree(buf);
	if (l0)
		free_page((unsigned long)l0);
	return ret;
}

/* A well-formed buffer call: VERSION with its response in kernel memory. */
static int good_call(const char *when)
{
	struct arm_smccc_res res;
	u8 *buf = kzalloc(PAGE_SIZE, GFP_KERNEL);
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	buf[0] = 0x00; /* Request::Version */
	gw_call(GW_FN(GW_VERSION), (unsigned long)buf, 1, (unsigned long)buf + 64,
		PAGE_SIZE - 64, &res);
	if (res.a0 || !res.a1 || res.a1 > PAGE_SIZE - 64) {
		pr_err("gwhvc: VERSION with buffers %s returned %ld (%lu bytes)\n", when,
		       (long)res.a0, res.a1);
		ret = -EIO;
	} else {
		pr_info("gwhvc: VERSION with buffers %s: %lu-byte response\n", when, res.a1);
	}
	kfree(buf);
	return ret;
}

/* The kernel's own write to a RAM page, through the linear map (no user mapping involved). */
static int run_poke(void)
{
	u8 *p, before;

	if (!pfn_valid(PHYS_PFN(poke))) {
		pr_err("gwhvc: poke %#lx is not RAM\n", poke);
		return -EINVAL;
	}
	p = phys_to_virt(poke);
	before = READ_ONCE(*p);
	WRITE_ONCE(*p, before ^ 1);
	pr_info("gwhvc: poked %#lx: %#x -> %#x\n", poke, before, READ_ONCE(*p));
	return 0;
}

static int __init gwhvc_init(void)
{
	struct arm_smccc_res res;
	int ret;

	if (poke)
		return run_poke();

	gw_call(GW_FN(GW_VERSION), 0, 0, 0, 0, &res);
	if (res.a0) {
		pr_err("gwhvc: not running under gatewarden-hv (VERSION returned %ld)\n",
		       (long)res.a0);
		return -ENODEV;
	}
	pr_info("gwhvc: gatewarden-hv ABI %lu.%lu, calls by HVC from EL1\n",
		res.a1 >> 16, res.a1 & 0xffff);
	ret = good_call("before");
	if (!ret)
		ret = run_bench();
	if (!ret)
		ret = run_malformed();
	if (!ret)
		ret = good_call("after the malformed calls");
	return ret;
}

static void __exit gwhvc_exit(void)
{
}

module_init(gwhvc_init);
module_exit(gwhvc_exit);
MODULE_DESCRIPTION("Gatewarden hypercalls from EL1: null-call timing and malformed-call checks");
MODULE_LICENSE("GPL");
