/*
 * enter.c — entering a running shell (exec and spawn share it): pinning its init, joining its
 * cgroups and namespaces, becoming its root, and starting the command there confined (confine.c).
 */
#include "sandbox.h"

/* Consumes one option exec and spawn share; returns 0 when `a` is not one of them. */
int parse_entry_option(struct entry_options *e, const char *cmd, const char *a, int *i, int argc, char **argv) {
    if (strcmp(a, "--init-pid") == 0) e->init_pid = (pid_t)strtol(arg_value(i, argc, argv), NULL, 10);
    else if (strcmp(a, "--init-start") == 0) e->init_start = strtoull(arg_value(i, argc, argv), NULL, 10);
    else if (strcmp(a, "--oom-events") == 0) e->oom_events = arg_value(i, argc, argv);
    else if (strcmp(a, "--cwd") == 0) e->cwd = arg_value(i, argc, argv);
    else if (strcmp(a, "--root-caps") == 0) {
        const char *v = arg_value(i, argc, argv);
        if (strcmp(v, "none") == 0) e->caps = SHELLS_CAPS_NONE;
        else if (strcmp(v, "package-manager") == 0) e->caps = SHELLS_CAPS_PACKAGE_MANAGER;
        else die("%s: --root-caps %s", cmd, v);
    } else if (strcmp(a, "--hostname") == 0) {
        e->hostname = arg_value(i, argc, argv);
        size_t length = strlen(e->hostname);
        if (length == 0 || length > 63) die("%s: a hostname has 1 to 63 characters", cmd);
    } else if (strcmp(a, "--loopback-up") == 0) e->loopback_up = 1;
    else if (strcmp(a, "--cgroup-procs") == 0) {
        if (e->cgroup_count == MAX_CGROUPS) die("too many cgroups");
        e->cgroups[e->cgroup_count++] = (char *)arg_value(i, argc, argv);
    } else return 0;
    return 1;
}

static void on_abort(int sig);

/*
 * Readies the helper (status fd not inherited, SIGPIPE ignored, SIGTERM/SIGINT abort) and pins the
 * shell's init: a pidfd refers to that one process even if its pid is recycled afterwards. Returns
 * the pidfd, or -1 when init is gone (the caller reports not_running).
 */
int pin_init(const struct entry_options *e) {
    fcntl(STATUS_FD, F_SETFD, FD_CLOEXEC);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_abort;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int init_fd = sys_pidfd_open(e->init_pid);
    if (init_fd < 0 || proc_start_time(e->init_pid) != e->init_start) {
        if (init_fd >= 0) close(init_fd);
        return -1;
    }
    return init_fd;
}
volatile sig_atomic_t abort_requested = 0;
static void on_abort(int sig) {
    (void)sig;
    abort_requested = 1;
}

/* Kills every process of the exec: its process group (the command made it with setsid). A group
 * kill cannot be outrun by fork (a task with a fatal signal pending cannot fork), the repeats are
 * for stragglers that were mid-fork. */
void kill_group(pid_t pgid) {
    for (int i = 0; i < 3; i++) {
        if (kill(-pgid, SIGKILL) < 0 && errno == ESRCH) return;
        usleep(1000);
    }
}

/*
 * Joins a running shell (init pinned by `init_fd`, a pidfd): its cgroups first (their files belong to
 * host root, which we stop being below), then every namespace of the shell in one step, then becomes
 * the shell's root. Returns -1 when init is gone. Children forked afterwards are in the shell's pid
 * namespace; this process itself keeps its host pid (and sees host pids).
 *
 * A shell claimed from the pool gets its hostname (and, for `localhost`, its loopback) here, from
 * the first entry on, instead of by a process of its own at the claim: both calls are allowed to
 * the shell's root of its own namespaces, before the helper confines itself, and cost nothing when
 * already done.
 */
int enter_shell(int init_fd, const struct entry_options *e) {
    join_cgroups(e->cgroups, e->cgroup_count);
    if (setns(init_fd, CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS |
                           CLONE_NEWCGROUP) < 0) {
        if (errno == ESRCH) return -1;
        die("setns");
    }
    close(init_fd);
    /* Root of the shell: host uid_base, no supplementary groups of the host. */
    if (setgroups(0, NULL) < 0 || setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0) die("become shell root");
    name_shell(e);
    /* Not dumpable: the shell's processes cannot ptrace or read /proc of this helper (it came from
     * the host) in the moment between fork and execve, nor while it relays. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    return 0;
}

/* A claimed shell's hostname and loopback (see enter_shell): as the shell's root, in its namespaces. */
void name_shell(const struct entry_options *e) {
    if (e->hostname && sethostname(e->hostname, strlen(e->hostname)) < 0) die("sethostname");
    if (e->loopback_up) bring_loopback_up();
}

/* Closes every file descriptor except the `count` ones in `keep` (-1 entries are ignored). */
void close_all_except(const int *keep, int count) {
    int highest = -1;
    for (int k = 0; k < count; k++)
        if (keep[k] > highest) highest = keep[k];
    for (int fd = 0; fd <= highest; fd++) {
        int kept = 0;
        for (int k = 0; k < count; k++)
            if (keep[k] == fd) kept = 1;
        if (!kept) close(fd);
    }
    close_fds_from(highest + 1);
}

/*
 * Background processes of a finished command still hold its output pipes (`server &`). Keep reading
 * and discarding so they never block or see EPIPE: a drainer in the shell (its pid namespace and
 * cgroups) that exits when the last writer closes and dies with the shell. Forked twice so that its
 * parent is the shell's init, not this helper: a child of a process outside the pid namespace would
 * be reparented to the host's init when we exit, and the shell's teardown would wait for the host's
 * init to reap it. Returns in the calling helper; entries of `fds` with fd -1 are closed already.
 */
void drain_in_shell(struct pollfd *fds, int count) {
    pid_t middle = fork();
    if (middle > 0) {
        waitpid(middle, NULL, 0);
        return;
    }
    if (middle < 0) return;
    if (fork() != 0) _exit(0);
    setsid();
    scrub_command_line("shells-drain"); /* visible inside the shell: no host paths */
    prctl(PR_SET_NAME, "shells-drain", 0, 0, 0);
    /* Keep only the pipes; hold nothing of the host, and be as confined as any other process of
     * the shell. */
    int keep[4] = {-1, -1, -1, -1}, open_pipes = 0;
    for (int k = 0; k < count && k < 4; k++) {
        keep[k] = fds[k].fd;
        if (fds[k].fd >= 0) open_pipes++;
        fds[k].events = POLLIN;
    }
    close_all_except(keep, count < 4 ? count : 4);
    if (shells_confine(SHELLS_CAPS_NONE) < 0) _exit(0);
    char buf[16384];
    while (open_pipes > 0) {
        if (poll(fds, (nfds_t)count, -1) < 0 && errno != EINTR) _exit(0);
        for (int k = 0; k < count; k++) {
            if (fds[k].fd < 0 || !(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            fcntl(fds[k].fd, F_SETFL, 0);
            if (read(fds[k].fd, buf, sizeof buf) <= 0) {
                close(fds[k].fd);
                fds[k].fd = -1;
                open_pipes--;
            }
        }
    }
    _exit(0);
}

/*
 * The command's environment reaches the helper under a prefix that neither the dynamic loader nor
 * the C library reads (see commandEnvironment in src/internal/exec.ts). The helper runs as host root
 * until it enters the shell: LD_PRELOAD, LD_LIBRARY_PATH, GCONV_PATH or GLIBC_TUNABLES of the
 * caller's choosing in its own environment would run the caller's code as host root (e.g. a library
 * written into the shell, reached through /proc/PID/root). Unwrapped only in the command's process,
 * inside the shell, right before its execve.
 */
#define COMMAND_ENV_PREFIX "SHELLS_ENV_"

static char **command_environment(void) {
    extern char **environ;
    size_t count = 0, prefix = strlen(COMMAND_ENV_PREFIX);
    for (char **e = environ; *e; e++) count++;
    char **env = calloc(count + 1, sizeof *env);
    if (!env) _exit(126);
    size_t n = 0;
    for (char **e = environ; *e; e++)
        if (strncmp(*e, COMMAND_ENV_PREFIX, prefix) == 0 && strchr(*e + prefix, '=') != NULL) env[n++] = *e + prefix;
    return env;
}

/* In a freshly forked child of the helper, stdio in place: the command's process state, the
 * confinement (confine.c), then the command. Never returns. */
void run_command(const char *cwd, enum shells_caps caps, char **command) {
    signal(SIGPIPE, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    umask(022);
    /* No core dumps: a crash must neither write the host's core_pattern target nor eat the
     * shell's disk. */
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    if (chdir(cwd) < 0) {
        dprintf(2, "shells: cannot change directory to %s: %s\n", cwd, strerror(errno));
        _exit(126);
    }
    int rc = shells_confine(caps);
    if (rc < 0) {
        dprintf(2, "shells: cannot confine the command: %s\n", strerror(-rc));
        _exit(126);
    }
    extern char **environ;
    environ = command_environment(); /* execvp searches the command's own PATH */
    execvp(command[0], command);
    int e = errno;
    dprintf(2, "shells: %s: %s\n", command[0], strerror(e));
    _exit(e == ENOENT ? 127 : 126);
}
