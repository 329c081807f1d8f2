/*
 * egress.c — the one way out of an `internet` shell, and any shell's way to its service bindings.
 *
 * An `internet` shell's network namespace holds only `lo`. Its only exit is this forwarder: a
 * process outside the shell (host pid and mount namespaces, the shell's cgroups, no capabilities
 * once it listens) that lives in the shell's network namespace and relays connections, byte for
 * byte, to the shell's egress proxy on its unix socket. The proxy (on the control plane) decides
 * what each connection may reach. Before it drops its capabilities the forwarder walls the
 * namespace (`wall_network`):
 *   - loopback is 127.0.0.1/32, 127.0.0.53/32 and ::1 only, and the default routes point at `lo`
 *     so that a connection to any other address enters the netfilter hooks instead of failing
 *     routing;
 *   - nftables redirects TCP to any non-local address on ports 80 and 443 to the redirect listener
 *     (clients that ignore HTTP(S)_PROXY), sends DNS to any address to the resolver at
 *     127.0.0.53:53, and refuses everything else that is not local (TCP reset, other protocols
 *     dropped). The shell's processes have no CAP_NET_ADMIN and cannot change the rules.
 * Listeners, each prefixing the connection to the proxy with a PROXY protocol v1 line that names
 * the client and the destination (the proxy dispatches on the destination, and the shell cannot
 * forge the line: its bytes only ever follow it):
 *   127.0.0.1:<port>       the HTTP proxy (HTTP(S)_PROXY point here);
 *   127.0.0.1:<port+1>     redirected connections, and [::1]:<port+1>; the original destination
 *                          comes from conntrack (SO_ORIGINAL_DST) — a direct connection has none
 *                          and is closed;
 *   127.0.0.53:53 TCP      DNS over TCP (length-prefixed messages, relayed as they are);
 *   127.0.0.53:53 UDP      each datagram is sent to the proxy length-prefixed on a connection of
 *                          its own, and the answer is sent back to the client.
 * A `sealed` or `localhost` shell granted service bindings gets the same forwarder and wall: the
 * proxy behind it refuses every destination and answers only the shell's binding URLs
 * (`http://127.0.0.1:<port>/bindings/<name>`), so the listener is all it reaches.
 * The forwarder parses nothing of what the shell sends. Its memory is fixed (MAX_PAIRS
 * connections, two buffers each; MAX_QUERIES DNS datagrams in flight): when every slot is busy it
 * stops accepting and new connections wait in the listen backlog; datagrams past the limit are
 * dropped (DNS clients retry).
 */
#include "sandbox.h"

#include <arpa/inet.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netinet/in.h>
#include <sys/wait.h>
#include <time.h>

#define MAX_PAIRS 64
#define PAIR_BUF 16384
#define MAX_QUERIES 16
#define QUERY_BUF 4096
#define QUERY_TIMEOUT_S 6
/* "PROXY TCP6 " + two addresses + two ports + CRLF stays under 108 bytes (the v1 limit). */
#define PREFIX_MAX 108

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

/* A DNS datagram being answered: its client, and the answer read so far (length-prefixed). */
struct query {
    int fd; /* the proxy connection; -1 when the slot is free (0 is a valid descriptor here) */
    struct sockaddr_storage client;
    socklen_t client_len;
    time_t started;
    size_t got;
    unsigned char buf[2 + QUERY_BUF];
};

/* The listeners, in the order of the poll array. */
enum { L_PROXY, L_REDIRECT4, L_REDIRECT6, L_DNS_TCP, L_DNS_UDP, L_COUNT };

static struct pair pairs[MAX_PAIRS];
static struct query queries[MAX_QUERIES];
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

/* "address port" of a socket address; 0 when it is neither IPv4 nor IPv6. */
static int format_address(const struct sockaddr_storage *sa, char *host, size_t size, unsigned *port) {
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        *port = ntohs(in->sin_port);
        return inet_ntop(AF_INET, &in->sin_addr, host, (socklen_t)size) != NULL;
    }
    if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        *port = ntohs(in6->sin6_port);
        return inet_ntop(AF_INET6, &in6->sin6_addr, host, (socklen_t)size) != NULL;
    }
    return 0;
}

/* The PROXY protocol v1 line naming `client` and `destination`; its length, or -1. */
static int proxy_line(char *out, size_t size, const struct sockaddr_storage *client,
                      const struct sockaddr_storage *destination) {
    char src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN];
    unsigned sport, dport;
    if (client->ss_family != destination->ss_family || !format_address(client, src, sizeof src, &sport) ||
        !format_address(destination, dst, sizeof dst, &dport))
        return -1;
    int n = snprintf(out, size, "PROXY %s %s %s %u %u\r\n", client->ss_family == AF_INET ? "TCP4" : "TCP6", src,
                     dst, sport, dport);
    return n > 0 && (size_t)n < size ? n : -1;
}

/* Where a redirected connection was going (conntrack's record of the address before the
 * redirect); -1 for a connection made to the redirect listener directly. */
static int original_destination(int fd, int family, struct sockaddr_storage *out) {
    socklen_t len = sizeof *out;
    memset(out, 0, sizeof *out);
    if (family == AF_INET) return getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, out, &len);
    return getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, out, &len);
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

/* Accepts one TCP connection from listener `which` and pairs it with a proxy connection whose
 * first bytes are the PROXY line. */
static void accept_connection(int listener, int which) {
    struct sockaddr_storage client, destination;
    socklen_t client_len = sizeof client, dest_len = sizeof destination;
    int fd = accept4(listener, (struct sockaddr *)&client, &client_len, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) return;
    int slot = -1;
    for (int i = 0; i < MAX_PAIRS && slot < 0; i++)
        if (!pairs[i].used) slot = i;
    char line[PREFIX_MAX];
    int line_len = -1;
    if (which == L_REDIRECT4 || which == L_REDIRECT6) {
        if (original_destination(fd, client.ss_family, &destination) == 0)
            line_len = proxy_line(line, sizeof line, &client, &destination);
    } else if (getsockname(fd, (struct sockaddr *)&destination, &dest_len) == 0) {
        line_len = proxy_line(line, sizeof line, &client, &destination);
    }
    int upstream = slot >= 0 && line_len > 0 ? connect_proxy(proxy_path) : -1;
    /* The line goes first, before anything the shell sends; a fresh unix socket takes it whole. */
    if (upstream >= 0 && write(upstream, line, (size_t)line_len) != line_len) {
        close(upstream);
        upstream = -1;
    }
    if (upstream < 0) {
        close(fd);
        return;
    }
    set_nonblocking(upstream);
    struct pair *p = &pairs[slot];
    memset(p, 0, sizeof *p);
    p->used = 1;
    p->up.from = fd;
    p->up.to = upstream;
    p->down.from = upstream;
    p->down.to = fd;
}

/* Reads one DNS datagram and sends it, length-prefixed after the PROXY line, to the proxy on a
 * connection of its own. */
static void accept_datagram(int udp) {
    unsigned char packet[QUERY_BUF];
    struct sockaddr_storage client, destination;
    socklen_t client_len = sizeof client, dest_len = sizeof destination;
    ssize_t n = recvfrom(udp, packet, sizeof packet, 0, (struct sockaddr *)&client, &client_len);
    if (n <= 0) return;
    struct query *q = NULL;
    for (int i = 0; i < MAX_QUERIES && !q; i++)
        if (queries[i].fd < 0) q = &queries[i];
    char line[PREFIX_MAX];
    int line_len = -1;
    if (getsockname(udp, (struct sockaddr *)&destination, &dest_len) == 0)
        line_len = proxy_line(line, sizeof line, &client, &destination);
    if (!q || line_len < 0) return;
    int fd = connect_proxy(proxy_path);
    if (fd < 0) return;
    unsigned char out[PREFIX_MAX + 2 + QUERY_BUF];
    memcpy(out, line, (size_t)line_len);
    out[line_len] = (unsigned char)(n >> 8);
    out[line_len + 1] = (unsigned char)(n & 0xff);
    memcpy(out + line_len + 2, packet, (size_t)n);
    size_t total = (size_t)line_len + 2 + (size_t)n;
    /* A fresh unix socket's send buffer holds a few KiB at once: this write does not block long. */
    if (write(fd, out, total) != (ssize_t)total) {
        close(fd);
        return;
    }
    shutdown(fd, SHUT_WR);
    set_nonblocking(fd);
    memset(q, 0, sizeof *q);
    q->fd = fd;
    memcpy(&q->client, &client, sizeof client);
    q->client_len = client_len;
    q->started = time(NULL);
}

static void end_query(struct query *q) {
    close(q->fd);
    q->fd = -1;
}

/* Reads what the proxy answered; once a whole message is there, sends it to the client. */
static void answer_datagram(int udp, struct query *q) {
    ssize_t n = read(q->fd, q->buf + q->got, sizeof q->buf - q->got);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
        end_query(q);
        return;
    }
    q->got += (size_t)n;
    if (q->got < 2) return;
    size_t want = ((size_t)q->buf[0] << 8 | q->buf[1]);
    if (want > QUERY_BUF) {
        end_query(q);
        return;
    }
    if (q->got < 2 + want) return;
    sendto(udp, q->buf + 2, want, 0, (struct sockaddr *)&q->client, q->client_len);
    end_query(q);
}

static void forward(const int listeners[L_COUNT]) {
    struct pollfd fds[L_COUNT + 2 * MAX_PAIRS + MAX_QUERIES];
    for (int i = 0; i < MAX_QUERIES; i++) queries[i].fd = -1;
    for (;;) {
        int n = 0, busy = 0;
        for (int i = 0; i < MAX_PAIRS; i++) busy += pairs[i].used;
        for (int i = 0; i < L_COUNT; i++) {
            fds[n].fd = i == L_DNS_UDP || busy < MAX_PAIRS ? listeners[i] : -1;
            fds[n].events = POLLIN;
            n++;
        }
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
        for (int i = 0; i < MAX_QUERIES; i++) {
            fds[n].fd = queries[i].fd;
            fds[n].events = POLLIN;
            n++;
        }
        if (poll(fds, (nfds_t)n, 1000) < 0) {
            if (errno == EINTR) continue;
            die("egress poll");
        }
        for (int i = 0; i < L_COUNT; i++) {
            if (!(fds[i].revents & POLLIN)) continue;
            if (i == L_DNS_UDP) accept_datagram(listeners[i]);
            else accept_connection(listeners[i], i);
        }
        for (int i = 0; i < MAX_PAIRS; i++) {
            struct pair *p = &pairs[i];
            if (!p->used) continue;
            short a = fds[L_COUNT + 2 * i].revents, b = fds[L_COUNT + 1 + 2 * i].revents;
            if (!a && !b) continue;
            if (pump(&p->up) < 0 || pump(&p->down) < 0 || ((a | b) & (POLLERR | POLLNVAL)) ||
                (p->up.shut && p->down.shut)) {
                close_pair(p);
            }
        }
        time_t now = time(NULL);
        for (int i = 0; i < MAX_QUERIES; i++) {
            struct query *q = &queries[i];
            if (q->fd < 0) continue;
            if (fds[L_COUNT + 2 * MAX_PAIRS + i].revents) answer_datagram(listeners[L_DNS_UDP], q);
            if (q->fd >= 0 && now - q->started > QUERY_TIMEOUT_S) end_query(q);
        }
    }
}

/* Runs `argv` (a host program, found on the host's PATH) with `input` on its stdin; its exit
 * status, or -1. */
static int run_tool(char *const argv[], const char *input) {
    int in[2];
    if (pipe2(in, O_CLOEXEC) < 0) return -1;
    pid_t child = fork();
    if (child < 0) return -1;
    if (child == 0) {
        dup2(in[0], 0);
        char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
        execvpe(argv[0], argv, envp);
        _exit(127);
    }
    close(in[0]);
    size_t len = strlen(input);
    if (len > 0 && write(in[1], input, len) != (ssize_t)len) { /* the tool reports what it lacked */ }
    close(in[1]);
    int status;
    if (waitpid(child, &status, 0) < 0) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Walls the shell's network namespace (see the top of this file); dies when it cannot. */
static void wall_network(int port) {
    char *ip[] = {"ip", "-batch", "-", NULL};
    if (run_tool(ip, "address del 127.0.0.1/8 dev lo\n"
                     "address add 127.0.0.1/32 dev lo\n"
                     "address add 127.0.0.53/32 dev lo\n"
                     "route add default dev lo src 127.0.0.1\n") != 0)
        die("egress: set up the shell's loopback routes");
    /* Without IPv6 in the namespace there is no v6 route at all, which walls it as well. */
    char *ip6[] = {"ip", "-6", "route", "add", "default", "dev", "lo", NULL};
    run_tool(ip6, "");
    char rules[1024];
    snprintf(rules, sizeof rules,
             "table inet shells_egress {\n"
             "  chain steer {\n"
             "    type nat hook output priority -100; policy accept;\n"
             "    fib daddr type != local tcp dport { 80, 443 } redirect to :%d\n"
             "    ip daddr != 127.0.0.53 meta l4proto { tcp, udp } th dport 53 dnat ip to 127.0.0.53:53\n"
             "  }\n"
             "  chain wall {\n"
             "    type filter hook output priority 0; policy accept;\n"
             "    fib daddr type local accept\n"
             "    meta l4proto tcp reject with tcp reset\n"
             "    drop\n"
             "  }\n"
             "}\n",
             port + 1);
    char *nft[] = {"nft", "-f", "-", NULL};
    if (run_tool(nft, rules) != 0) die("egress: load the shell's nftables rules (is nftables installed?)");
}

/* A listening socket of `type` on `address`:`port` (an IPv4 or IPv6 literal). */
static int listen_on(int type, const char *address, int port) {
    struct sockaddr_storage sa;
    memset(&sa, 0, sizeof sa);
    socklen_t len;
    int family;
    if (strchr(address, ':')) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&sa;
        family = in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, address, &in6->sin6_addr) != 1) return -1;
        len = sizeof *in6;
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)&sa;
        family = in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, address, &in->sin_addr) != 1) return -1;
        len = sizeof *in;
    }
    int fd = socket(family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, len) < 0 || (type == SOCK_STREAM && listen(fd, 128) < 0)) {
        close(fd);
        return -1;
    }
    return fd;
}

/*
 * Starts the forwarder of the shell whose init is `init_pid`: walls the shell's network namespace
 * and listens in it (the proxy on 127.0.0.1:`port`, redirected connections on `port`+1, DNS on
 * 127.0.0.53:53); returns once it listens. `host_mnt_fd` is the host's mount namespace: the
 * forwarder leaves the keeper's one, so it holds none of the shell's mounts (a stopped shell's
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
        wall_network(port);
        int listeners[L_COUNT];
        listeners[L_PROXY] = listen_on(SOCK_STREAM, "127.0.0.1", port);
        listeners[L_REDIRECT4] = listen_on(SOCK_STREAM, "127.0.0.1", port + 1);
        /* -1 without IPv6 in the namespace: poll skips it. */
        listeners[L_REDIRECT6] = listen_on(SOCK_STREAM, "::1", port + 1);
        listeners[L_DNS_TCP] = listen_on(SOCK_STREAM, "127.0.0.53", 53);
        listeners[L_DNS_UDP] = listen_on(SOCK_DGRAM, "127.0.0.53", 53);
        for (int i = 0; i < L_COUNT; i++)
            if (listeners[i] < 0 && i != L_REDIRECT6) die("egress listener %d on port %d", i, port);
        /* Keep stderr (the keeper's log), the listeners and the ready pipe; nothing else of the
         * keeper's (its status pipe to the control plane, the shell's files) comes along. */
        int keep[2 + L_COUNT] = {2, ready[1]};
        int kept = 2;
        for (int i = 0; i < L_COUNT; i++)
            if (listeners[i] >= 0) keep[kept++] = listeners[i];
        close_all_except(keep, kept);
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
        forward(listeners);
        _exit(0);
    }
    close(ready[1]);
    char c;
    if (read(ready[0], &c, 1) != 1) die("egress forwarder failed to start");
    close(ready[0]);
}
