/*
 * relay.c — moving bytes between a command and the control plane: exec's bounded output relay
 * (wall clock, output limit, backpressure) and spawn's framed two-way relay (input, EOF, resize,
 * signals; output buffers that never read more than they can hand on).
 */
#include "sandbox.h"

/*
 * Writes output to the control plane. Its pipes are non-blocking: the control plane may stop
 * reading for a while (backpressure from a slow consumer), and the wall clock and aborts must still
 * be enforced meanwhile. Returns -1 when the output cannot be delivered any more (the control plane
 * is gone, or the exec was ended while the control plane held back).
 */
int relay(int fd, const char *buf, size_t len, long long deadline, pid_t group, const char **reason) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) return -1;
        if (**reason) return -1; /* ended: drop what the control plane did not take in time */
        long long now = now_ms();
        if (now >= deadline || abort_requested) {
            *reason = now >= deadline ? "wall_clock" : "aborted";
            kill_group(group);
            return -1;
        }
        struct pollfd writable = {fd, POLLOUT, 0};
        long long wait = deadline - now < 50 ? deadline - now : 50;
        poll(&writable, 1, (int)wait);
    }
    return 0;
}


void write_all_blocking(struct outbound *o);

/* Sends what a stream holds to the control plane; returns without waiting when it holds back. */
void flush_outbound(struct outbound *o) {
    while (o->len > 0) {
        if (o->dst_dead) {
            o->len = 0;
            break;
        }
        ssize_t n = write(o->dst, o->data + o->off, o->len);
        if (n > 0) {
            o->off += (size_t)n;
            o->len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;
        o->dst_dead = 1;
    }
    o->off = 0;
}

/* Like flush_outbound, but waits for the control plane to take everything (the final output). */
void write_all_blocking(struct outbound *o) {
    for (;;) {
        flush_outbound(o);
        if (o->len == 0) return;
        struct pollfd writable = {o->dst, POLLOUT, 0};
        if (poll(&writable, 1, -1) < 0 && errno != EINTR) o->dst_dead = 1;
    }
}

/* Reads one chunk from the process into an empty stream buffer. Returns 0 at EOF/EIO. */
int fill_outbound(struct outbound *o) {
    ssize_t n = read(o->src, o->data, sizeof o->data);
    if (n > 0) {
        o->off = 0;
        o->len = (size_t)n;
        return 1;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 1;
    return 0; /* EOF; EIO on a terminal master whose slave nobody holds any more */
}

void flush_inbound(struct inbound *in) {
    while (in->len > 0 && in->fd >= 0) {
        ssize_t n = write(in->fd, in->data + in->off, in->len);
        if (n > 0) {
            in->off += (size_t)n;
            in->len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;
        /* The process closed its stdin (EPIPE) or the terminal is gone (EIO): input is dropped. */
        in->len = 0;
        if (!in->is_pty) {
            close(in->fd);
            in->fd = -1;
        }
    }
    if (in->len == 0) in->off = 0;
    if (in->len == 0 && in->eof_pending && in->fd >= 0) {
        in->eof_pending = 0;
        if (in->is_pty) {
            struct termios t;
            if (tcgetattr(in->fd, &t) == 0 && (t.c_lflag & ICANON) && write(in->fd, &t.c_cc[VEOF], 1) < 0) {
                /* the terminal is gone */
            }
        } else {
            close(in->fd);
            in->fd = -1;
        }
    }
}

static void spawn_signal(int master, pid_t child, int sig) {
    switch (sig) {
    case SIGINT: case SIGTERM: case SIGKILL: case SIGHUP: case SIGQUIT: case SIGTSTP: case SIGCONT: break;
    default: return;
    }
    pid_t group = child;
    if (master >= 0) {
        /* The terminal's foreground job, as this helper's (host) pid namespace numbers it; the kernel
         * lets a foreground group only be one of the terminal's session, i.e. of the shell. */
        pid_t foreground = -1;
        if (ioctl(master, TIOCGPGRP, &foreground) == 0 && foreground > 0) group = foreground;
    }
    if (kill(-group, sig) < 0 && errno == ESRCH && group == child) kill(child, sig);
}

static void handle_frame(struct inbound *in, int master, pid_t child) {
    switch (in->type) {
    case 'e':
        in->eof_pending = 1;
        break;
    case 'r':
        if (master >= 0 && in->control_len >= 4) {
            struct winsize ws;
            memset(&ws, 0, sizeof ws);
            ws.ws_col = (unsigned short)(in->control[0] << 8 | in->control[1]);
            ws.ws_row = (unsigned short)(in->control[2] << 8 | in->control[3]);
            ioctl(master, TIOCSWINSZ, &ws); /* the kernel sends SIGWINCH to the foreground job */
        }
        break;
    case 's':
        if (in->control_len >= 1) spawn_signal(master, child, in->control[0]);
        break;
    default:
        break; /* unknown frames are skipped */
    }
}

/* Parses bytes from fd 0. The caller reads no more than the free room of the input buffer, so the
 * data they carry always fits. */
void parse_frames(struct inbound *in, const unsigned char *p, size_t n, int master, pid_t child) {
    while (n > 0) {
        if (in->header_len < 5) {
            in->header[in->header_len++] = *p++;
            n--;
            if (in->header_len < 5) continue;
            in->type = in->header[0];
            in->remaining = (uint32_t)in->header[1] << 24 | (uint32_t)in->header[2] << 16 |
                            (uint32_t)in->header[3] << 8 | (uint32_t)in->header[4];
            in->control_len = 0;
            if (in->remaining == 0) {
                if (in->type != 'd') handle_frame(in, master, child);
                in->header_len = 0;
            }
            continue;
        }
        size_t take = n < in->remaining ? n : in->remaining;
        if (in->type == 'd') {
            if (in->off > 0 && in->off + in->len + take > sizeof in->data) {
                memmove(in->data, in->data + in->off, in->len);
                in->off = 0;
            }
            memcpy(in->data + in->off + in->len, p, take);
            in->len += take;
        } else {
            for (size_t k = 0; k < take && in->control_len < sizeof in->control; k++)
                in->control[in->control_len++] = p[k];
        }
        p += take;
        n -= take;
        in->remaining -= (uint32_t)take;
        if (in->remaining == 0) {
            if (in->type != 'd') handle_frame(in, master, child);
            in->header_len = 0;
        }
    }
}

void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* The master of a new terminal on the shell's own devpts instance (we are in its mount namespace).
 * /dev/pts is a mount point the shell cannot rename, remove or mount over, and only devpts has a
 * ptmx node there; the checks make sure nothing else was opened all the same. */
int open_pty_master(void) {
    int master = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
    if (master < 0) die("open the shell's /dev/pts/ptmx");
    struct statfs fs;
    struct stat st;
    if (fstatfs(master, &fs) < 0 || fs.f_type != DEVPTS_MAGIC || fstat(master, &st) < 0 || !S_ISCHR(st.st_mode) ||
        major(st.st_rdev) != 5 || minor(st.st_rdev) != 2) {
        errno = 0;
        die("/dev/pts/ptmx of the shell is not a devpts ptmx");
    }
    int unlock = 0;
    if (ioctl(master, TIOCSPTLCK, &unlock) < 0) die("unlock the terminal");
    return master;
}

/*
 * Hands one chunk of the command's output (stream `dst`: 1 or 2) to the control plane within the
 * exec's output limit. Returns 1 when this chunk crossed the limit (the caller ends the command;
 * the output is cut there and marked truncated), else 0.
 */
int forward_output(struct exec_output *r, int dst, const char *buf, size_t n) {
    if (!r->relaying) return 0;
    long long room = r->max_output - r->relayed;
    size_t take = n;
    if ((long long)take > room) take = room > 0 ? (size_t)room : 0;
    if (take > 0 && relay(dst, buf, take, r->deadline, r->group, &r->reason) < 0) r->relaying = 0;
    r->relayed += (long long)take;
    if (take == n) return 0;
    r->truncated = 1;
    r->relaying = 0;
    if (!*r->reason) r->reason = "output_limit";
    return 1;
}
