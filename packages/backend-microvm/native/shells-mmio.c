// SPDX-License-Identifier: GPL-2.0
/*
 * shells_mmio: registers the guest's virtio-mmio devices from a module parameter.
 *
 * Debian's kernels build virtio_mmio as a module without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, so a
 * guest booted without ACPI (QEMU microvm, acpi=off: no ACPI tables to discover devices in, and
 * no ACPI timer or interrupt setup to go wrong under emulation) has no way to find its disk and its
 * agent port. QEMU writes the devices on the kernel command line as
 * `virtio_mmio.device=<size>@<base>:<irq>`; the guest agent passes them here as
 * `device=<size>@<base>:<irq>,...` and this module registers one "virtio-mmio" platform device
 * for each, exactly as virtio_mmio's own command-line option would. virtio_mmio binds them.
 */
#include <linux/err.h>
#include <linux/ioport.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/platform_device.h>

#define MAX_DEVICES 16

static char *device[MAX_DEVICES];
static int count;
module_param_array(device, charp, &count, 0400);
MODULE_PARM_DESC(device, "virtio-mmio devices, each <size>@<base>:<irq>");

static struct platform_device *devices[MAX_DEVICES];

static void unregister_all(void)
{
	int i;

	for (i = 0; i < MAX_DEVICES; i++)
		if (!IS_ERR_OR_NULL(devices[i]))
			platform_device_unregister(devices[i]);
}

static int __init shells_mmio_init(void)
{
	int i;

	for (i = 0; i < count; i++) {
		char *rest = device[i];
		unsigned long long size, base;
		unsigned int irq;
		struct resource res[2];

		size = memparse(rest, &rest);
		if (*rest++ != '@' || sscanf(rest, "%llx:%u", &base, &irq) != 2) {
			unregister_all();
			return -EINVAL;
		}
		res[0] = (struct resource)DEFINE_RES_MEM(base, size);
		res[1] = (struct resource)DEFINE_RES_IRQ(irq);
		devices[i] = platform_device_register_resndata(NULL, "virtio-mmio", i, res, 2, NULL, 0);
		if (IS_ERR(devices[i])) {
			int error = PTR_ERR(devices[i]);

			unregister_all();
			return error;
		}
	}
	return 0;
}

static void __exit shells_mmio_exit(void)
{
	unregister_all();
}

module_init(shells_mmio_init);
module_exit(shells_mmio_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("virtio-mmio devices from a module parameter");
