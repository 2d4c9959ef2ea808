/* SPDX-License-Identifier: Apache-2.0 */
/* ovkvm: boot a Linux bzImage on KVM with a serial console. */
#include "boot/boot.h"
#include "devices/device.h"
#include "kvm/vm.h"

#include "devices/vmblk.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXIT_GUEST_CRASH 2
#define DEFAULT_MEMORY (512ull << 20)
#define DEFAULT_CMDLINE "console=ttyS0"

static const char usage_text[] =
"Usage: ovkvm --kernel BZIMAGE [--initrd FILE] [--cmdline TEXT]\n"
"             [--memory SIZE] [--cpus N] [--console stdio|file:PATH|socket:PATH]\n"
"             [--api-socket PATH] [--disk PATH[,ro|snapshot][,queues=N]]...\n"
"\n"
"Boot a Linux kernel in a KVM virtual machine with a serial console.\n"
"\n"
"The guest is a PC without firmware: ovkvm loads the bzImage itself (Linux\n"
"boot protocol 2.12 or later, 64-bit entry), with ACPI tables that list the\n"
"vCPUs, an in-kernel interrupt controller and timer, a 16550 UART on COM1\n"
"(port 0x3f8, IRQ 4), a PCI host bridge (ACPI PNP0A03) and one virtio-blk\n"
"disk per --disk.  The guest sees the KVM paravirtual CPUID leaves, so it\n"
"picks kvm-clock and the other PV features by itself.\n"
"\n"
"Options:\n"
"  -k, --kernel BZIMAGE   the kernel to boot (required)\n"
"  -i, --initrd FILE      an initial RAM disk, placed high in guest memory\n"
"  -a, --cmdline TEXT     the kernel command line (default \"" DEFAULT_CMDLINE "\";\n"
"                         keep console=ttyS0 to see the guest)\n"
"  -m, --memory SIZE      guest RAM: a number with a K, M or G suffix; a bare\n"
"                         number is MiB (default 512M, at least 64M)\n"
"  -c, --cpus N           number of vCPUs, each a host thread (default 1)\n"
"  -s, --console WHERE    the serial console's host end (default stdio):\n"
"                           stdio        this terminal; raw mode when stdin is\n"
"                                        a terminal, restored on exit;\n"
"                                        Ctrl-A x quits, Ctrl-A Ctrl-A sends Ctrl-A\n"
"                           file:PATH    guest output to PATH, no input\n"
"                           socket:PATH  a Unix stream socket at PATH; one\n"
"                                        client at a time (output while nobody\n"
"                                        is connected is dropped)\n"
"  -d, --disk PATH[,OPT]  a virtio-blk disk (repeatable, at most 8; /dev/vda,\n"
"                         /dev/vdb, ... in the order given): any image the\n"
"                         block engine opens (VMDK sparse/flat/stream, raw),\n"
"                         locked against other writers.  A virtio 1.x PCI\n"
"                         device (1af4:1042) with MSI-X; each queue has its\n"
"                         own I/O thread, guest notifications arrive by\n"
"                         ioeventfd and interrupts leave by irqfd.  OPT:\n"
"                           ro         read-only (the guest sees a RO disk)\n"
"                           snapshot   the image stays untouched: writes go to\n"
"                                      a delta child PATH-ovkvm-snapshot-PID.vmdk\n"
"                                      beside it, removed when ovkvm exits (a\n"
"                                      streamOptimized VMDK needs ro or this:\n"
"                                      the engine writes its grains only once)\n"
"                           queues=N   N virtqueues (1-64, default 1)\n"
"                         On power-off or reboot the disks are flushed and\n"
"                         closed before ovkvm exits.\n"
"      --api-socket PATH  a Unix socket for control: one JSON object per line,\n"
"                         {\"command\": NAME}; each gets one line back,\n"
"                         {\"return\": {...}} or {\"error\": \"...\"}.  NAME is\n"
"                           status    state (running|paused), cpus, memory\n"
"                                     (bytes), vcpus: [{index, exits,\n"
"                                     io_exits, mmio_exits}], disks: [{name,\n"
"                                     path, read_only, snapshot, queues,\n"
"                                     requests, read_bytes, written_bytes,\n"
"                                     errors, inflight (requests taken\n"
"                                     from the guest and not answered\n"
"                                     yet), image, top, size,\n"
"                                     checkpoints, view}] (counters since\n"
"                                     start); with \"disk\": I only that\n"
"                                     disk's object\n"
"                           pause     park every vCPU; resume lets them go\n"
"                           disk-grow {\"disk\": I, \"size\": BYTES}: grow the\n"
"                                     I-th --disk (from 0) while the guest\n"
"                                     runs; its driver is told at once (a\n"
"                                     configuration-change interrupt) and\n"
"                                     sees the new capacity\n"
"                           shutdown  a hard stop (disks flushed, exit 0)\n""                         and, for the disk \"disk\": I (default 0), what\n"
"                         pvblk's --api-socket answers (ovkdisk --disk I\n"
"                         uses them):\n"
"                           checkpoint-create {\"name\": N}: start tracking\n"
"                                     the blocks written from now on\n"
"                           checkpoint-delete {\"name\": N}; checkpoint-list\n"
"                           changed   {\"since\": N[, \"offset\", \"length\"]}:\n"
"                                     extents [[OFF, LEN], ...] written\n"
"                                     since N, \"next\" where to go on\n"
"                           view-create [{\"checkpoint\": N}]: freeze the\n"
"                                     disk's top file as a point-in-time\n"
"                                     view (\"path\") while the guest's\n"
"                                     writes go to a child (\"child\",\n"
"                                     PATH-live-K.vmdk); not on ,snapshot\n"
"                           view-release  merge the child back while the\n"
"                                     guest runs (error \"busy\" while\n"
"                                     another program holds the view)\n"
"  -h, --help             show this help\n"
"\n"
"Exit status:\n"
"  0  the guest powered off or rebooted (a reboot ends ovkvm too), or ovkvm\n"
"     was stopped by SIGTERM, SIGINT, the console's quit key or a shutdown\n"
"     command on the API socket\n"
"  1  a usage error or a VMM error (no /dev/kvm, unreadable kernel, ...)\n"
"  2  the guest crashed: triple fault, KVM internal error, failed VM entry\n"
"\n"
"Examples:\n"
"  ovkvm --kernel /boot/vmlinuz-$(uname -r) --initrd initrd.img \\\n"
"        --cmdline 'console=ttyS0 rdinit=/init' --memory 1G --cpus 2\n"
"  ovkvm -k bzImage -i rootfs.cpio.gz -s file:guest.log -a 'console=ttyS0 quiet'\n"
"  ovkvm -k bzImage -i rootfs.cpio.gz -s socket:/run/vm0.console &\n"
"  socat -,raw,echo=0 UNIX-CONNECT:/run/vm0.console\n"
"  ovkvm -k bzImage -i rootfs.cpio.gz --api-socket /run/vm0.api &\n"
"  echo '{\"command\": \"pause\"}' | socat - UNIX-CONNECT:/run/vm0.api\n"
"  ovkvm -k bzImage -i rootfs.cpio.gz --cpus 2 --disk disk.vmdk,queues=2 \\\n"
"        --disk base-stream.vmdk,snapshot --disk /srv/iso.raw,ro\n";

static void usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "ovkvm: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry 'ovkvm --help'.\n");
	exit(EXIT_FAILURE);
}

/* "512M", "1G", "65536K", "256" (MiB). */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 20;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case '\0': break;
	default: return -EINVAL;
	}
	if (*end || v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

struct file_map {
	uint8_t *data;
	size_t len;
};

static int map_file(const char *path, const char *what, struct file_map *m)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "ovkvm: %s %s: %s\n", what, path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode) || st.st_size == 0) {
		fprintf(stderr, "ovkvm: %s %s: not a non-empty regular file\n", what, path);
		close(fd);
		return -1;
	}
	m->len = st.st_size;
	m->data = mmap(NULL, m->len, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (m->data == MAP_FAILED) {
		fprintf(stderr, "ovkvm: %s %s: %s\n", what, path, strerror(errno));
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "kernel", required_argument, NULL, 'k' },
		{ "initrd", required_argument, NULL, 'i' },
		{ "cmdline", required_argument, NULL, 'a' },
		{ "memory", required_argument, NULL, 'm' },
		{ "cpus", required_argument, NULL, 'c' },
		{ "console", required_argument, NULL, 's' },
		{ "api-socket", required_argument, NULL, 'A' },
		{ "disk", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *kernel_path = NULL, *initrd_path = NULL;
	const char *cmdline = DEFAULT_CMDLINE, *console_spec = "stdio";
	const char *api_socket = NULL;
	const char *disk_args[VM_MAX_DISKS];
	unsigned ndisks = 0;
	struct control control;
	uint64_t memory = DEFAULT_MEMORY;
	const char *memory_arg = "512M";
	unsigned long ncpus = 1;
	struct file_map kernel = { 0 }, initrd = { 0 };
	struct boot_config cfg;
	struct boot_entry entry;
	struct console console;
	static struct vm vm;
	enum vm_stop stop;
	char err[256];
	char *end;
	sigset_t term;
	int c, status = EXIT_FAILURE;

	/* Termination signals stay pending until the main loop reads them from
	 * its signalfd, so one that arrives during setup still stops us
	 * cleanly (terminal restored, exit status 0). */
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigaddset(&term, SIGINT);
	sigaddset(&term, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &term, NULL);

	while ((c = getopt_long(argc, argv, "k:i:a:m:c:s:d:h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			if (ndisks == VM_MAX_DISKS)
				usage_error("--disk: at most %s disks", "8");
			if (vmblk_check_arg(optarg))
				usage_error("--disk: see above ('%s')", optarg);
			disk_args[ndisks++] = optarg;
			break;
		case 'k': kernel_path = optarg; break;
		case 'i': initrd_path = optarg; break;
		case 'a': cmdline = optarg; break;
		case 's': console_spec = optarg; break;
		case 'A': api_socket = optarg; break;
		case 'm':
			if (parse_size(optarg, &memory))
				usage_error("--memory: not a size: '%s'", optarg);
			memory_arg = optarg;
			break;
		case 'c':
			errno = 0;
			ncpus = strtoul(optarg, &end, 10);
			if (errno || *end || ncpus < 1 || ncpus > VM_MAX_CPUS)
				usage_error("--cpus: give a number from 1 to 64, not '%s'", optarg);
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		default:
			fprintf(stderr, "Try 'ovkvm --help'.\n");
			return EXIT_FAILURE;
		}
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (!kernel_path)
		usage_error("%s", "--kernel is required");
	if (memory < (64ull << 20))
		usage_error("--memory: %s is below the 64M minimum", memory_arg);

	if (map_file(kernel_path, "kernel", &kernel))
		return EXIT_FAILURE;
	if (initrd_path && map_file(initrd_path, "initrd", &initrd))
		goto out_unmap;
	/* Check the image before touching KVM, for a clear error. */
	{
		struct bzimage_info info;
		if (bzimage_parse(kernel.data, kernel.len, &info, err, sizeof(err))) {
			fprintf(stderr, "ovkvm: %s: %s\n", kernel_path, err);
			goto out_unmap;
		}
	}

	if (vm_create(&vm, memory, ncpus))
		goto out_unmap;
	if (console_open(&console, console_spec))
		goto out_vm;
	vm.console = &console;
	memcpy(vm.disk_args, disk_args, sizeof(disk_args));
	vm.ndisks = ndisks;
	if (vm_devices_init(&vm))
		goto out_console; /* it took down what it had set up */

	cfg = (struct boot_config){
		.kernel = kernel.data, .kernel_len = kernel.len,
		.initrd = initrd.data, .initrd_len = initrd.len,
		.cmdline = cmdline, .ncpus = ncpus,
	};
	if (boot_setup(&vm.mem, &cfg, &entry, err, sizeof(err))) {
		fprintf(stderr, "ovkvm: %s\n", err);
		goto out_devices;
	}
	/* Their bytes are in guest RAM now and a reboot ends ovkvm: keep no
	   file pages resident for the rest of the run (issue 18: they were
	   9 of ovkvm's 10 MiB of overhead with Debian's kernel). */
	munmap(kernel.data, kernel.len);
	kernel.data = NULL;
	if (initrd.data) {
		munmap(initrd.data, initrd.len);
		initrd.data = NULL;
	}
	if (vm_create_vcpus(&vm, &entry))
		goto out_devices;
	/* served on a thread of its own from here on: the disks it answers
	   for are made, and it stops before they go */
	if (api_socket) {
		if (control_open(&control, api_socket, &vm))
			goto out_devices;
		vm.control = &control;
	}

	stop = vm_run(&vm);
	switch (stop) {
	case VM_STOP_POWEROFF:
		status = 0;
		break;
	case VM_STOP_REBOOT:
		fprintf(stderr, "ovkvm: the guest rebooted; ovkvm exits\n");
		status = 0;
		break;
	case VM_STOP_HOST:
		fprintf(stderr, "ovkvm: %s\n", vm.stop_msg);
		status = 0;
		break;
	case VM_STOP_CRASH:
		fprintf(stderr, "ovkvm: guest crashed: %s\n", vm.stop_msg);
		status = EXIT_GUEST_CRASH;
		break;
	default:
		fprintf(stderr, "ovkvm: error: %s\n", vm.stop_msg);
		status = EXIT_FAILURE;
		break;
	}

	if (vm.control)
		control_close(&control);
out_devices:
	vm_devices_exit(&vm);
out_console:
	console_close(&console);
out_vm:
	vm_destroy(&vm);
out_unmap:
	if (initrd.data)
		munmap(initrd.data, initrd.len);
	if (kernel.data)
		munmap(kernel.data, kernel.len);
	return status;
}
