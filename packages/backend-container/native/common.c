/*
 * common.c — small helpers every mode of shells-sandbox uses: fatal errors, whole writes, process
 * identity (pid + start time), counters in cgroup files, descriptor hygiene.
 */
#include "sandbox.h"

/* ---------------------------------------------------------------------------------------------- */
/* small helpers                                                                                   */

int report_fd = -1; /* where a fatal error is reported besides stderr (start: the ready pipe) */

void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void die(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int saved = errno;
    char line[1200];
    int n = snprintf(line, sizeof line, "error %s%s%s\n", msg, saved ? ": " : "", saved ? strerror(saved) : "");
    if (n > (int)sizeof line - 1) n = sizeof line - 1;
    if (report_fd >= 0 && write(report_fd, line, (size_t)n) < 0) { /* nothing more to do */ }
    if (write(2, line + 6, (size_t)n - 6) < 0) { /* nothing more to do */ }
    _exit(1);
}

void write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) die("open %s", path);
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len) die("write %s", path);
    close(fd);
}

int write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int sys_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

/* Start time of a process (clock ticks since boot, /proc/PID/stat field 22): with the pid, it names
 * one process for good, so a recycled pid is never mistaken for the shell's init. */
unsigned long long proc_start_time(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may contain spaces and parentheses */
    if (!p) return 0;
    p++;
    /* p is at the space before field 3; step to the space before field 22 (starttime). */
    for (int field = 3; field < 22 && p; field++) p = strchr(p + 1, ' ');
    return p ? strtoull(p + 1, NULL, 10) : 0;
}

void join_cgroups(char **procs, int count) {
    for (int i = 0; i < count; i++) write_file(procs[i], "0");
}

const char *arg_value(int *i, int argc, char **argv) {
    if (*i + 1 >= argc) die("%s needs a value", argv[*i]);
    return argv[++*i];
}

/*
 * Closes every descriptor from `lowest` up, whatever the parent left open. A descriptor inherited
 * from the control plane's own parent (a directory of the host, a socket) would otherwise reach the
 * shell: a command holding an fd of the host's `/` can list and write the host through
 * /proc/self/fd/N or openat, beside every namespace wall. close_range closes them all in one call;
 * without it (older kernels, seccomp), /proc/self/fd names the open ones; without /proc, every
 * number below the descriptor limit is closed.
 */
void close_fds_from(int lowest) {
    if (syscall(SYS_close_range, (unsigned)lowest, ~0U, 0) == 0) return;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        int open_fds[1024], count = 0, self = dirfd(d);
        struct dirent *e;
        for (;;) {
            /* Collect first, close after: closing while reading the directory skips entries. */
            count = 0;
            while (count < 1024 && (e = readdir(d)) != NULL) {
                char *end;
                long fd = strtol(e->d_name, &end, 10);
                if (*end == 0 && e->d_name[0] != '.' && fd >= lowest && fd != self) open_fds[count++] = (int)fd;
            }
            for (int k = 0; k < count; k++) close(open_fds[k]);
            if (count < 1024) break;
            rewinddir(d);
        }
        closedir(d);
        return;
    }
    struct rlimit limit;
    long highest = getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY ? (long)limit.rlim_cur : 65536;
    for (long fd = lowest; fd < highest; fd++) close((int)fd);
}

static char *command_line;
static size_t command_line_len;

/* Notes where the kernel keeps this process's argv (what /proc/PID/cmdline shows). */
void remember_command_line(int argc, char **argv) {
    if (argc < 1) return;
    command_line = argv[0];
    command_line_len = (size_t)(argv[argc - 1] + strlen(argv[argc - 1]) + 1 - argv[0]);
}

/*
 * Replaces the command line that /proc/PID/cmdline shows with `name`. A process of the helper that
 * lives inside a shell (its init, an output drainer) would otherwise show every shell its arguments
 * — the state dir, the image's path, cgroup paths: the host's layout. Call it once nothing reads the
 * arguments any more (options point into them).
 */
void scrub_command_line(const char *name) {
    if (!command_line) return;
    memset(command_line, 0, command_line_len);
    size_t len = strlen(name);
    memcpy(command_line, name, len < command_line_len ? len : command_line_len - 1);
}

long long read_counter(int fd, const char *key) {
    if (fd < 0) return -1;
    char buf[4096];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return -1;
    buf[n] = 0;
    size_t keylen = strlen(key);
    for (char *line = buf; *line;) {
        if (strncmp(line, key, keylen) == 0 && line[keylen] == ' ') return strtoll(line + keylen + 1, NULL, 10);
        char *next = strchr(line, '\n');
        if (!next) break;
        line = next + 1;
    }
    return -1;
}

long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
