/*
 * sandbox.h — what the parts of shells-sandbox share. Files by role:
 *   shells-sandbox.c  modes and dispatch          confine.c  the process-level walls (seccomp, caps)
 *   holder.c          start, with-disk (building   enter.c    entering a running shell
 *                     and holding a shell)         relay.c    moving bytes to and from a command
 *   exec.c, spawn.c   the exec and spawn modes     common.c   small shared helpers
 *   egress.c          the internet shell's one way out (a forwarder to its egress proxy)
 *   port.c            `connect`: one connection to a server on a shell's loopback (exposed ports)
 */
#ifndef SHELLS_SANDBOX_H
#define SHELLS_SANDBOX_H

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/loop.h>
#include <linux/mount.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "confine.h"

#define UID_RANGE 65536
#define MAX_CGROUPS 8
/* Shared read-only layers one shell may stack on (the backend flattens before a deeper fork). */
#define MAX_LAYERS 8
#define STATUS_FD 3

/* common.c */
extern int report_fd; /* where a fatal error is reported besides stderr (start: the ready pipe) */
void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void write_file(const char *path, const char *text);
int write_all(int fd, const void *buf, size_t len);
int sys_pidfd_open(pid_t pid);
unsigned long long proc_start_time(pid_t pid);
void join_cgroups(char **procs, int count);
const char *arg_value(int *i, int argc, char **argv);
void close_fds_from(int lowest);
long long read_counter(int fd, const char *key);
long long now_ms(void);
void remember_command_line(int argc, char **argv);
void scrub_command_line(const char *name);

/* holder.c */
int cmd_start(int argc, char **argv);
int cmd_with_disk(int argc, char **argv);
void bring_loopback_up(void);

/* egress.c */
void start_egress_forwarder(pid_t init_pid, int host_mnt_fd, const char *socket_path, int port);

/* enter.c */
/* What exec and spawn share: the shell to enter and how the command starts there. */
struct entry_options {
    pid_t init_pid;
    unsigned long long init_start;
    char *cgroups[MAX_CGROUPS];
    int cgroup_count;
    const char *oom_events; /* memory.oom_control (v1) or memory.events (v2): "oom_kill N" */
    const char *cwd;
    enum shells_caps caps;
    /* A shell claimed from the pool: the hostname, and loopback up (`localhost`), set on entry. */
    const char *hostname;
    int loopback_up;
};
extern volatile sig_atomic_t abort_requested;
int parse_entry_option(struct entry_options *e, const char *cmd, const char *a, int *i, int argc, char **argv);
int pin_init(const struct entry_options *e);
int enter_shell(int init_fd, const struct entry_options *e);
void name_shell(const struct entry_options *e);
void kill_group(pid_t pgid);
void close_all_except(const int *keep, int count);
void drain_in_shell(struct pollfd *fds, int count);
void run_command(const char *cwd, enum shells_caps caps, char **command) __attribute__((noreturn));

/* relay.c */
#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif
#define DEVPTS_MAGIC 0x1cd1
#define RELAY_BUF 65536
/* One direction of output: from the process (pipe or terminal master) to the control plane. */
struct outbound {
    int src; /* -1 once it reached EOF (or EIO: no terminal slave left) */
    int dst; /* 1 or 2 */
    int dst_dead; /* the control plane stopped reading for good: output is dropped */
    size_t off, len;
    char data[RELAY_BUF];
};

/* Input for the process, with the frame parser of fd 0. */
struct inbound {
    int fd; /* the stdin pipe or the terminal master; -1 once closed */
    int is_pty;
    int eof_pending;
    size_t off, len;
    char data[RELAY_BUF];
    /* frame parser */
    unsigned char header[5];
    int header_len;
    unsigned char type;
    uint32_t remaining;
    unsigned char control[8];
    size_t control_len;
};


/* exec's output so far: its limit, how much went through, and how the exec ended (if it did). */
struct exec_output {
    long long max_output, relayed, deadline;
    int relaying, truncated;
    pid_t group;        /* the command's process group, killed at the wall clock */
    const char *reason; /* "" while running */
};
int forward_output(struct exec_output *r, int dst, const char *buf, size_t n);
int relay(int fd, const char *buf, size_t len, long long deadline, pid_t group, const char **reason);
void flush_outbound(struct outbound *o);
void write_all_blocking(struct outbound *o);
int fill_outbound(struct outbound *o);
void flush_inbound(struct inbound *in);
void parse_frames(struct inbound *in, const unsigned char *p, size_t n, int master, pid_t child);
void set_nonblocking(int fd);
int open_pty_master(void);

/* exec.c, spawn.c, port.c */
int cmd_exec(int argc, char **argv);
int cmd_spawn(int argc, char **argv);
int cmd_connect(int argc, char **argv);


#endif
