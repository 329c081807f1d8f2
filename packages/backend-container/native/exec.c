/*
 * exec.c — `exec`: one command in a running shell, with its wall clock, output limit and kill
 * reason (oom, pids, disk, wall_clock, output_limit, aborted) reported on fd 3.
 */
#include "sandbox.h"

struct exec_options {
    struct entry_options e;
    long long timeout_ms;
    long long max_output;
    unsigned long long disk_full_bytes; /* free space at or below this after a failure = disk limit */
    int stdin_null;                      /* a ready helper: the command's stdin is /dev/null */
    char **command;
};

/*
 * A ready helper (`--wait-request`) is started ahead of its exec: it pins the shell's init and joins
 * the shell's cgroups and namespaces (the costly part of an entry: a process start, a cgroup
 * migration, setns), then waits on REQUEST_FD for what to run. The control plane writes the request
 * and closes its end: NUL-terminated strings, the first the number of arguments that follow (the
 * options below, as on the command line, then `--` and the command), the rest the command's
 * environment (SHELLS_ENV_-prefixed, as in the helper's own environment otherwise). End of file
 * before a request: it is not wanted any more (a stop, a restart, the control plane gone).
 */
#define REQUEST_FD 4
#define MAX_REQUEST (64 << 20)

/* Consumes the exec's own options and those of an entry; returns the index of the command. A
 * request may carry only what an exec decides, not which shell or cgroups it enters. */
static int parse_exec_options(struct exec_options *o, int argc, char **argv, int *wait_request) {
    int i = 0;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) return i + 1;
        if (!wait_request && strcmp(a, "--cwd") && strcmp(a, "--hostname") && strcmp(a, "--loopback-up") &&
            strcmp(a, "--timeout-ms") && strcmp(a, "--max-output") && strcmp(a, "--disk-full-bytes") &&
            strcmp(a, "--stdin-null"))
            die("exec: %s cannot be requested", a);
        if (parse_entry_option(&o->e, "exec", a, &i, argc, argv)) continue;
        if (strcmp(a, "--timeout-ms") == 0) o->timeout_ms = strtoll(arg_value(&i, argc, argv), NULL, 10);
        else if (strcmp(a, "--max-output") == 0) o->max_output = strtoll(arg_value(&i, argc, argv), NULL, 10);
        else if (strcmp(a, "--disk-full-bytes") == 0) o->disk_full_bytes = strtoull(arg_value(&i, argc, argv), NULL, 10);
        else if (strcmp(a, "--stdin-null") == 0 && !wait_request) o->stdin_null = 1;
        else if (strcmp(a, "--wait-request") == 0 && wait_request && i == 0) *wait_request = 1; /* first: main keeps fd 4 */
        else die("exec: unknown argument %s", a);
    }
    return i;
}

/*
 * Reads a ready helper's request into `o` and the environment; 0 when it came, -1 when none will
 * (end of file, an abort), -2 when the shell's init exited while it waited (`init_watch`, a pidfd,
 * turns readable then: the helper must not keep the shell's namespaces, and so its disk, once the
 * shell is gone).
 */
static int read_request(struct exec_options *o, int init_watch) {
    size_t size = 0, capacity = 4096;
    char *buf = malloc(capacity);
    if (!buf) die("request: out of memory");
    for (;;) {
        if (size == capacity) {
            if (capacity >= MAX_REQUEST) die("request: over %d bytes", MAX_REQUEST);
            capacity *= 2;
            buf = realloc(buf, capacity);
            if (!buf) die("request: out of memory");
        }
        struct pollfd waits[2] = {{REQUEST_FD, POLLIN, 0}, {init_watch, POLLIN, 0}};
        if (poll(waits, 2, -1) < 0) {
            if (errno == EINTR && !abort_requested) continue;
            return -1;
        }
        if (waits[1].revents) return -2;
        ssize_t n = read(REQUEST_FD, buf + size, capacity - size);
        if (n < 0 && errno == EINTR && abort_requested) return -1; /* stopped before its exec */
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("request: read");
        if (n == 0) break;
        size += (size_t)n;
    }
    close(REQUEST_FD);
    if (size == 0) return -1;
    if (buf[size - 1] != '\0') die("request: not NUL-terminated");
    size_t count = 0;
    for (size_t k = 0; k < size; k++)
        if (buf[k] == '\0') count++;
    char **strings = calloc(count + 1, sizeof *strings);
    if (!strings) die("request: out of memory");
    size_t n = 0;
    for (char *p = buf; p < buf + size; p += strlen(p) + 1) strings[n++] = p;
    char *end;
    long argc = strtol(strings[0], &end, 10);
    if (*end || argc < 1 || (size_t)argc > count - 1) {
        errno = 0;
        die("request: bad argument count");
    }
    int i = parse_exec_options(o, (int)argc, strings + 1, NULL);
    if (i >= argc) die("exec: no command");
    char **command = calloc((size_t)(argc - i) + 1, sizeof *command);
    if (!command) die("request: out of memory");
    memcpy(command, strings + 1 + i, (size_t)(argc - i) * sizeof *command);
    o->command = command;
    extern char **environ;
    environ = strings + 1 + argc; /* the rest; `strings` ends with NULL */
    return 0;
}

int cmd_exec(int argc, char **argv) {
    struct exec_options o;
    memset(&o, 0, sizeof o);
    o.e.cwd = "/workspace";
    o.timeout_ms = 60000;
    o.max_output = 10 << 20;
    o.disk_full_bytes = 1 << 20;
    int wait_request = 0;
    int i = parse_exec_options(&o, argc, argv, &wait_request);
    if (wait_request && i < argc) die("exec: a ready helper takes its command from its request");
    if (!wait_request) {
        if (i >= argc) die("exec: no command");
        o.command = argv + i;
    }

    int init_fd = pin_init(&o.e);
    if (init_fd < 0) {
        dprintf(STATUS_FD, "not_running\n");
        return 0;
    }
    int oom_fd = o.e.oom_events ? open(o.e.oom_events, O_RDONLY | O_CLOEXEC) : -1;
    /* Opened on the host, before entering: the shell's own /dev/null is its root's to replace. */
    int devnull = wait_request ? open("/dev/null", O_RDONLY | O_CLOEXEC) : -1;
    /* Still the shell's init when the request comes? Its pidfd turns readable when it exits. */
    int init_watch = wait_request ? fcntl(init_fd, F_DUPFD_CLOEXEC, 0) : -1;

    if (enter_shell(init_fd, &o.e) < 0) {
        dprintf(STATUS_FD, "not_running\n");
        return 0;
    }
    if (wait_request) {
        int request = read_request(&o, init_watch);
        if (request == -1) return 0;
        struct pollfd gone = {init_watch, POLLIN, 0};
        if (request == -2 || poll(&gone, 1, 0) != 0) {
            dprintf(STATUS_FD, "not_running\n");
            return 0;
        }
        close(init_watch);
        name_shell(&o.e);
        if (o.stdin_null && dup2(devnull, 0) < 0) die("stdin");
        close(devnull);
    }

    long long oom_before = read_counter(oom_fd, "oom_kill");

    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) die("pipe");
    fcntl(1, F_SETFL, fcntl(1, F_GETFL) | O_NONBLOCK);
    fcntl(2, F_SETFL, fcntl(2, F_GETFL) | O_NONBLOCK);
    long long started = now_ms();
    pid_t child = fork();
    if (child < 0) {
        /* The shell is at its process limit: the command could not even start. */
        const char *reason = errno == EAGAIN ? "pids" : "";
        dprintf(STATUS_FD, "exit=126 reason=%s truncated=0\n", reason);
        dprintf(2, "shells: cannot start the command: %s\n", strerror(errno));
        return 0;
    }
    if (child == 0) {
        setsid();
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        close_fds_from(3); /* stdio only; everything else stays with the helper */
        run_command(o.e.cwd, o.e.caps, o.command);
    }
    close(out[1]);
    close(err[1]);
    int child_fd = sys_pidfd_open(child);

    struct exec_output r = {o.max_output, 0, started + o.timeout_ms, 1, 0, child, ""};
    int exited = 0, status = 0;
    struct pollfd fds[3] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}, {child_fd, POLLIN, 0}};
    int open_pipes = 2;
    char buf[65536];

    while (!exited) {
        long long now = now_ms();
        if (now >= r.deadline && !*r.reason) {
            r.reason = "wall_clock";
            kill_group(child);
        }
        if (abort_requested && !*r.reason) {
            r.reason = "aborted";
            kill_group(child);
        }
        long long wait = r.deadline - now;
        if (wait > 50) wait = 50;
        if (wait < 0) wait = 0;
        int ready = poll(fds, 3, (int)wait);
        if (ready < 0 && errno != EINTR) die("poll");
        for (int k = 0; k < 2 && ready > 0; k++) {
            if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t n = read(fds[k].fd, buf, sizeof buf);
            if (n <= 0) {
                fds[k].fd = -1;
                open_pipes--;
                continue;
            }
            if (forward_output(&r, k + 1, buf, (size_t)n)) kill_group(child);
        }
        if (fds[2].revents & POLLIN || child_fd < 0) {
            if (waitpid(child, &status, child_fd < 0 ? 0 : WNOHANG) == child) exited = 1;
        }
    }

    /* Output the command wrote just before it ended is still in the pipes: take it. Background
     * processes may hold the pipes open for a long time; they are handed to a drainer below. */
    for (int k = 0; k < 2; k++) {
        if (fds[k].fd < 0) continue;
        fcntl(fds[k].fd, F_SETFL, O_NONBLOCK);
        for (;;) {
            ssize_t n = read(fds[k].fd, buf, sizeof buf);
            if (n == 0) {
                fds[k].fd = -1;
                open_pipes--;
                break;
            }
            if (n < 0) break;
            forward_output(&r, k + 1, buf, (size_t)n);
        }
    }

    int exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (!*r.reason && oom_fd >= 0 && read_counter(oom_fd, "oom_kill") > oom_before) r.reason = "oom";
    if (!*r.reason && exit_code != 0) {
        /* The overlay reports its upper filesystem, the shell's disk: a failure with the disk
         * (nearly) full, in blocks or inodes, is a failure at the disk limit. */
        struct statvfs vfs;
        if (statvfs("/", &vfs) == 0 &&
            ((unsigned long long)vfs.f_bavail * vfs.f_frsize <= o.disk_full_bytes || vfs.f_favail == 0))
            r.reason = "disk";
    }
    dprintf(STATUS_FD, "exit=%d reason=%s truncated=%d\n", exit_code, r.reason, r.truncated);

    /* Background processes still hold the command's stdout/stderr (`server &`): see drain_in_shell. */
    if (open_pipes > 0) drain_in_shell(fds, 2);
    return 0;
}
