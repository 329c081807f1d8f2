/*
 * egress.c — the one way out of an `internet` shell.
 *
 * An `internet` shell's network namespace holds only `lo`: there is no interface to route through,
 * so nothing inside can reach the host, private ranges, link-local addresses (the cloud metadata
 * service) or other shells, whatever address it dials, over any protocol. Its only exit is this
 * forwarder: a process outside the shell (host pid and mount namespaces, the shell's cgroups, no
 * capabilities) that listens on 127.0.0.1:<port> *inside* the shell's network namespace and relays
 * each accepted TCP connection, byte for byte, to the shell's egress proxy on its unix socket. The
 * proxy (on the control plane) decides what each connection may reach. The forwarder parses
 * nothing: it only moves bytes, and its memory is fixed (MAX_PAIRS connections, two buffers each);
 * when every slot is busy it stops accepting and new connections wait in the listen backlog.
 */
#include "sandbox.h"

#include <netinet/in.h>

#define MAX_PAIRS 64
#define PAIR_BUF 16384

/* One direction of a relayed connection. */
struct lane {
    int from, to;
    int eof;     /* `from` reached end of file (or failed) */
    int shut;    /* `to` was shut down for writing after the buffer drained */
    size_t off, len;
    char buf[PAIR_BUF];
};

/* A shell-side TCP connection and its proxy-side unix connection. */
struct pair {
    int used;
    struct lane up;   /* shell → proxy */
    struct lane down; /* proxy → shell */
};

static struct pair pairs[MAX_PAIRS];
/* The proxy's socket path, copied: the command line it came from is scrubbed. */
static char proxy_path[sizeof(((struct sockaddr_un *)0)->sun_path)];

static void close_pair(struct pair *p) {
    close(p->up.from);
    close(p->up.to);
    memset(p, 0, sizeof *p);
}

/* Connects to the proxy's socket; -1 when the proxy is not there (the shell's connection is then
 * closed at once, the same as a refused connection). */
static int connect_proxy(const char *socket_path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strncpy(addr.sun_path, socket_path, sizeof addr.sun_path - 1);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        fprintf(stderr, "shells-egress: cannot reach the egress proxy: %s\n", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Moves what it can in one direction without blocking; returns -1 when the pair must close. */
static int pump(struct lane *l) {
    if (l->len == 0 && !l->eof) {
        ssize_t n = read(l->from, l->buf, sizeof l->buf);
        if (n > 0) {
            l->off = 0;
            l->len = (size_t)n;
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            l->eof = 1;
        }
    }
    if (l->len > 0) {
        ssize_t n = write(l->to, l->buf + l->off, l->len);
        if (n > 0) {
            l->off += (size_t)n;
            l->len -= (size_t)n;
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            return -1;
        }
    }
    if (l->eof && l->len == 0 && !l->shut) {
        shutdown(l->to, SHUT_WR);
        l->shut = 1;
    }
    return 0;
}

static void forward(int listener, const char *socket_path) {
    struct pollfd fds[1 + 2 * MAX_PAIRS];
    for (;;) {
        int n = 0, busy = 0;
        for (int i = 0; i < MAX_PAIRS; i++) busy += pairs[i].used;
        fds[n].fd = busy < MAX_PAIRS ? listener : -1;
        fds[n].events = POLLIN;
        n++;
        for (int i = 0; i < MAX_PAIRS; i++) {
            struct pair *p = &pairs[i];
            /* Read a side only while its buffer is empty (backpressure); wait to write while full. */
            fds[n].fd = p->used ? p->up.from : -1;
            fds[n].events = (short)((!p->up.eof && p->up.len == 0 ? POLLIN : 0) | (p->down.len > 0 ? POLLOUT : 0));
            n++;
            fds[n].fd = p->used ? p->down.from : -1;
            fds[n].events = (short)((!p->down.eof && p->down.len == 0 ? POLLIN : 0) | (p->up.len > 0 ? POLLOUT : 0));
            n++;
        }
        if (poll(fds, (nfds_t)n, -1) < 0) {
            if (errno == EINTR) continue;
            die("egress poll");
        }
        if (fds[0].revents & POLLIN) {
            int client = accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (client >= 0) {
                int upstream = connect_proxy(socket_path);
                int slot = -1;
                for (int i = 0; i < MAX_PAIRS && slot < 0; i++)
                    if (!pairs[i].used) slot = i;
                if (upstream < 0 || slot < 0) {
                    if (upstream >= 0) close(upstream);
                    close(client);
                } else {
                    set_nonblocking(upstream);
                    struct pair *p = &pairs[slot];
                    memset(p, 0, sizeof *p);
                    p->used = 1;
                    p->up.from = client;
                    p->up.to = upstream;
                    p->down.from = upstream;
                    p->down.to = client;
                }
            }
        }
        for (int i = 0; i < MAX_PAIRS; i++) {
            struct pair *p = &pairs[i];
            if (!p->used) continue;
            short a = fds[1 + 2 * i].revents, b = fds[2 + 2 * i].revents;
            if (!a && !b) continue;
            if (pump(&p->up) < 0 || pump(&p->down) < 0 || ((a | b) & (POLLERR | POLLNVAL)) ||
                (p->up.shut && p->down.shut)) {
                close_pair(p);
            }
        }
    }
}

/*
 * Starts the forwarder of the shell whose init is `init_pid`, listening on 127.0.0.1:`port` in the
 * shell's network namespace; returns once it listens. `host_mnt_fd` is the host's mount namespace:
 * the forwarder leaves the keeper's one, so it holds none of the shell's mounts (a stopped shell's
 * disk detaches as soon as the keeper and init are gone). It dies with the keeper.
 */
void start_egress_forwarder(pid_t init_pid, int host_mnt_fd, const char *socket_path, int port) {
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0) die("pipe");
    pid_t keeper = getpid();
    pid_t child = fork();
    if (child < 0) die("fork egress forwarder");
    if (child == 0) {
        close(ready[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        if (getppid() != keeper) _exit(1);
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/ns/net", init_pid);
        int netns = open(path, O_RDONLY | O_CLOEXEC);
        if (netns < 0 || setns(netns, CLONE_NEWNET) < 0) die("join the shell's network namespace");
        close(netns);
        if (setns(host_mnt_fd, CLONE_NEWNS) < 0 || chdir("/") < 0) die("leave the shell's mounts");
        close(host_mnt_fd);
        snprintf(proxy_path, sizeof proxy_path, "%s", socket_path);
        int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (listener < 0) die("egress socket");
        int one = 1;
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in addr;
        memset(&addr, 0, sizeof addr);
        addr.sin_family = AF_INET;
        addr.sin_port = htons((uint16_t)port);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, 128) < 0)
            die("egress listen on 127.0.0.1:%d", port);
        /* Keep stderr (the keeper's log), the listener and the ready pipe; nothing else of the
         * keeper's (its status pipe to the control plane, the shell's files) comes along. */
        int keep[] = {2, listener, ready[1]};
        close_all_except(keep, 3);
        report_fd = -1;
        scrub_command_line("shells-egress");
        prctl(PR_SET_NAME, "shells-egress", 0, 0, 0);
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        /* Host uid 0 with no capabilities: it can still open the proxy's root-owned socket, and
         * nothing else a relay of bytes has no use for. */
        if (shells_confine(SHELLS_CAPS_NONE) < 0) die("confine egress forwarder");
        signal(SIGPIPE, SIG_IGN);
        if (write(ready[1], "1", 1) != 1) _exit(1);
        close(ready[1]);
        forward(listener, proxy_path);
        _exit(0);
    }
    close(ready[1]);
    char c;
    if (read(ready[0], &c, 1) != 1) die("egress forwarder failed to start");
    close(ready[0]);
}
