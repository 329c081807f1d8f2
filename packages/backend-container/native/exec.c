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
    char **command;
};

int cmd_exec(int argc, char **argv) {
    struct exec_options o;
    memset(&o, 0, sizeof o);
    o.e.cwd = "/workspace";
    o.timeout_ms = 60000;
    o.max_output = 10 << 20;
    o.disk_full_bytes = 1 << 20;
    int i = 0;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (parse_entry_option(&o.e, "exec", a, &i, argc, argv)) continue;
        if (strcmp(a, "--timeout-ms") == 0) o.timeout_ms = strtoll(arg_value(&i, argc, argv), NULL, 10);
        else if (strcmp(a, "--max-output") == 0) o.max_output = strtoll(arg_value(&i, argc, argv), NULL, 10);
        else if (strcmp(a, "--disk-full-bytes") == 0) o.disk_full_bytes = strtoull(arg_value(&i, argc, argv), NULL, 10);
        else die("exec: unknown argument %s", a);
    }
    if (i >= argc) die("exec: no command");
    o.command = argv + i;

    int init_fd = pin_init(&o.e);
    if (init_fd < 0) {
        dprintf(STATUS_FD, "not_running\n");
        return 0;
    }
    int oom_fd = o.e.oom_events ? open(o.e.oom_events, O_RDONLY | O_CLOEXEC) : -1;

    if (enter_shell(init_fd, &o.e) < 0) {
        dprintf(STATUS_FD, "not_running\n");
        return 0;
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
