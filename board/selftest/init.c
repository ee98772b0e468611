/*
 * A tiny static PID 1 that proves a board works end to end: the kernel boots, runs /init
 * from the initramfs with /dev/console as its output, reads a file from the initramfs,
 * sees the virtio disk and the virtio console, mounts cgroup v2 and lists its
 * controllers, prints the verdict line that `nanostar-board boot` parses, and powers off
 * so QEMU exits. No libc: raw system calls.
 *
 * Build (tools/tests/board.rs does this):
 *   arm-linux-gnueabihf-gcc -static -nostdlib -ffreestanding -fno-stack-protector \
 *       -fno-pie -no-pie -Os -o init board/selftest/init.c        (or aarch64-linux-gnu-gcc)
 *
 * Behaviour, chosen by the first argument (kernel command line: `... -- MODE`):
 *   (none)  the checks above, then `nanostar-verdict: pass` and power off (any check
 *           failing: `nanostar-verdict: fail WHAT` and power off)
 *   fail    `nanostar-verdict: fail ...` and power off
 *   silent  power off without a verdict
 *   exit    return from init: the kernel panics ("Attempted to kill init!")
 *   hang    block forever (for the runner's timeout)
 */

#if defined(__aarch64__)
#define SYS_READ 63
#define SYS_WRITE 64
#define SYS_OPENAT 56
#define SYS_CLOSE 57
#define SYS_MOUNT 40
#define SYS_REBOOT 142
#define SYS_EXIT 93
#define SYS_PPOLL 73 /* ppoll */
#define ARCH "aarch64"
#elif defined(__arm__)
#define SYS_READ 3
#define SYS_WRITE 4
#define SYS_OPENAT 322
#define SYS_CLOSE 6
#define SYS_MOUNT 21
#define SYS_REBOOT 88
#define SYS_EXIT 1
#define SYS_PPOLL 414 /* ppoll_time64 */
#define ARCH "armv7"
#else
#error "only arm and aarch64"
#endif

#define AT_FDCWD (-100)
#define O_RDONLY 0
#define O_WRONLY 1
#define LINUX_REBOOT_MAGIC1 0xfee1dead
#define LINUX_REBOOT_MAGIC2 672274793
#define LINUX_REBOOT_CMD_POWER_OFF 0x4321fedc

static long syscall4(long n, long a, long b, long c, long d)
{
#if defined(__aarch64__)
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	__asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
	return x0;
#else
	register long r7 __asm__("r7") = n;
	register long r0 __asm__("r0") = a;
	register long r1 __asm__("r1") = b;
	register long r2 __asm__("r2") = c;
	register long r3 __asm__("r3") = d;
	__asm__ volatile("svc 0" : "+r"(r0) : "r"(r7), "r"(r1), "r"(r2), "r"(r3) : "memory");
	return r0;
#endif
}

static long syscall5(long n, long a, long b, long c, long d, long e)
{
#if defined(__aarch64__)
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	__asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4) : "memory");
	return x0;
#else
	register long r7 __asm__("r7") = n;
	register long r0 __asm__("r0") = a;
	register long r1 __asm__("r1") = b;
	register long r2 __asm__("r2") = c;
	register long r3 __asm__("r3") = d;
	register long r4 __asm__("r4") = e;
	__asm__ volatile("svc 0" : "+r"(r0) : "r"(r7), "r"(r1), "r"(r2), "r"(r3), "r"(r4) : "memory");
	return r0;
#endif
}

static unsigned long length(const char *s)
{
	unsigned long n = 0;
	while (s[n])
		n++;
	return n;
}

static void put(int fd, const char *s)
{
	syscall4(SYS_WRITE, fd, (long)s, (long)length(s), 0);
}

static int same(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

static void power_off(void)
{
	syscall4(SYS_REBOOT, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_POWER_OFF, 0);
	put(1, "selftest: reboot(POWER_OFF) returned\n");
	for (;;)
		syscall4(SYS_PPOLL, 0, 0, 0, 0);
}

static void fail(const char *why)
{
	put(1, "nanostar-verdict: fail ");
	put(1, why);
	put(1, "\n");
	power_off();
}

static long open_path(const char *path, int flags)
{
	return syscall4(SYS_OPENAT, AT_FDCWD, (long)path, flags, 0);
}

static int run(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	static char buf[256];
	long fd, n;

	put(1, "selftest: /init running on " ARCH "\n");
	if (same(mode, "fail"))
		fail("selftest was asked to fail");
	if (same(mode, "silent"))
		power_off();
	if (same(mode, "exit"))
		return 1;
	if (same(mode, "hang")) {
		put(1, "selftest: hanging\n");
		for (;;)
			syscall4(SYS_PPOLL, 0, 0, 0, 0);
	}

	/* A file the runner added with --file. */
	fd = open_path("/etc/selftest.txt", O_RDONLY);
	if (fd < 0)
		fail("cannot open /etc/selftest.txt");
	n = syscall4(SYS_READ, fd, (long)buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		fail("cannot read /etc/selftest.txt");
	buf[n] = 0;
	syscall4(SYS_CLOSE, fd, 0, 0, 0);
	put(1, "selftest: /etc/selftest.txt says: ");
	put(1, buf);

	/* devtmpfs names the virtio devices: the data disk and the second console. */
	if (syscall5(SYS_MOUNT, (long)"devtmpfs", (long)"/dev", (long)"devtmpfs", 0, 0) < 0)
		fail("cannot mount devtmpfs on /dev");
	fd = open_path("/dev/vda", O_RDONLY);
	if (fd < 0)
		fail("no virtio disk /dev/vda");
	syscall4(SYS_CLOSE, fd, 0, 0, 0);
	put(1, "selftest: /dev/vda opened\n");
	fd = open_path("/dev/hvc0", O_WRONLY);
	if (fd < 0)
		fail("no virtio console /dev/hvc0");
	put(fd, "selftest: hello on hvc0\n");
	syscall4(SYS_CLOSE, fd, 0, 0, 0);
	put(1, "selftest: wrote to /dev/hvc0\n");

	/* cgroup v2 with the controllers the runtime uses. */
	if (syscall5(SYS_MOUNT, (long)"sysfs", (long)"/sys", (long)"sysfs", 0, 0) < 0)
		fail("cannot mount sysfs on /sys");
	if (syscall5(SYS_MOUNT, (long)"cgroup2", (long)"/sys/fs/cgroup", (long)"cgroup2", 0, 0) < 0)
		fail("cannot mount cgroup2 on /sys/fs/cgroup");
	fd = open_path("/sys/fs/cgroup/cgroup.controllers", O_RDONLY);
	if (fd < 0)
		fail("no /sys/fs/cgroup/cgroup.controllers");
	n = syscall4(SYS_READ, fd, (long)buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		fail("cannot read cgroup.controllers");
	buf[n] = 0;
	syscall4(SYS_CLOSE, fd, 0, 0, 0);
	put(1, "selftest: cgroup controllers: ");
	put(1, buf);

	put(1, "nanostar-verdict: pass\n");
	power_off();
	return 0;
}

__attribute__((used, noreturn)) void start_c(long *sp)
{
	int argc = (int)sp[0];
	char **argv = (char **)(sp + 1);
	syscall4(SYS_EXIT, run(argc, argv), 0, 0, 0);
	for (;;)
		;
}

/*
 * The kernel enters with sp -> argc, argv[], NULL, envp[], NULL, auxv. On arm a naked
 * function, so the compiler marks it Thumb or ARM consistently with the rest of the
 * file (GCC 12 has no naked functions on aarch64, where a plain asm block does).
 */
#if defined(__aarch64__)
__asm__(".text\n.global _start\n.type _start, %function\n_start:\n\tmov x0, sp\n\tbl start_c\n");
#else
__attribute__((naked, noreturn)) void _start(void)
{
	__asm__("mov r0, sp\n\tbl start_c\n");
}
#endif
