/*
 * port.c — `connect`: one TCP connection to a server listening on a shell's own loopback, for the
 * control plane's exposed ports.
 *
 * The helper pins the shell's init, joins only its network namespace, and connects to 127.0.0.1
 * (then ::1) on the given port: the only addresses it ever dials are the shell's own loopback, so
 * neither the host's services nor another shell's can be reached this way, whatever port is asked.
 * Once connected it drops every capability and confines itself (confine.c), reports "ok" on fd 3,
 * and relays bytes between its stdin/stdout and the socket until both directions have ended. It
 * parses nothing of what either side sends. It stays in the host's mount and pid namespaces and
 * holds nothing of the shell but the socket.
 */
#include "sandbox.h"

#include <arpa/inet.h>
#include <netinet/in.h>

/* A connection to `port` on the loopback of the network namespace we are in, or -1 (errno set). */
static int connect_loopback(int port) {
    struct sockaddr_in v4;
    memset(&v4, 0, sizeof v4);
    v4.sin_family = AF_INET;
    v4.sin_port = htons((uint16_t)port);
    v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&v4, sizeof v4) == 0) return fd;
    if (fd >= 0) close(fd);
    /* A server that listens on `localhost` may have bound ::1 only. */
    struct sockaddr_in6 v6;
    memset(&v6, 0, sizeof v6);
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons((uint16_t)port);
    v6.sin6_addr = in6addr_loopback;
    fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&v6, sizeof v6) == 0) return fd;
    int saved = errno;
    if (fd >= 0) close(fd);
    errno = saved;
    return -1;
}

/* Relays stdin → sock and sock → stdout until both directions reached end of file. */
static void relay_socket(int sock) {
    char up[RELAY_BUF], down[RELAY_BUF];
    size_t up_len = 0, up_off = 0, down_len = 0, down_off = 0;
    int in_open = 1, sock_open = 1, out_open = 1;
    set_nonblocking(0);
    set_nonblocking(1);
    set_nonblocking(sock);
    while ((in_open || up_len > 0) || (sock_open || down_len > 0)) {
        struct pollfd fds[3];
        fds[0].fd = in_open && up_len == 0 ? 0 : -1;
        fds[0].events = POLLIN;
        fds[1].fd = sock;
        fds[1].events = (short)((sock_open && down_len == 0 ? POLLIN : 0) | (up_len > 0 ? POLLOUT : 0));
        if (fds[1].events == 0) fds[1].fd = -1;
        fds[2].fd = down_len > 0 && out_open ? 1 : -1;
        fds[2].events = POLLOUT;
        if (poll(fds, 3, -1) < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (fds[0].revents) {
            ssize_t n = read(0, up, sizeof up);
            if (n > 0) {
                up_len = (size_t)n;
                up_off = 0;
            } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                in_open = 0;
                shutdown(sock, SHUT_WR);
            }
        }
        if (up_len > 0 && (fds[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t n = write(sock, up + up_off, up_len);
            if (n > 0) {
                up_off += (size_t)n;
                up_len -= (size_t)n;
                if (up_len == 0 && !in_open) shutdown(sock, SHUT_WR);
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                return; /* the server went away */
            }
        }
        if (sock_open && down_len == 0 && (fds[1].revents & (POLLIN | POLLERR | POLLHUP))) {
            ssize_t n = read(sock, down, sizeof down);
            if (n > 0) {
                down_len = (size_t)n;
                down_off = 0;
            } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                sock_open = 0;
            }
        }
        if (down_len > 0 && (fds[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t n = write(1, down + down_off, down_len);
            if (n > 0) {
                down_off += (size_t)n;
                down_len -= (size_t)n;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                out_open = 0; /* the control plane hung up */
                return;
            }
        }
        if (!sock_open && down_len == 0 && out_open) {
            close(1);
            out_open = 0;
        }
        if (!out_open && !sock_open) return;
    }
}

int cmd_connect(int argc, char **argv) {
    struct entry_options e;
    memset(&e, 0, sizeof e);
    int port = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--port") == 0) port = atoi(arg_value(&i, argc, argv));
        else if (!parse_entry_option(&e, "connect", a, &i, argc, argv)) die("connect: unknown argument %s", a);
    }
    if (e.init_pid <= 0 || port < 1 || port > 65535) die("connect: missing arguments");
    int init_fd = pin_init(&e);
    if (init_fd < 0 || setns(init_fd, CLONE_NEWNET) < 0) {
        if (write(STATUS_FD, "not_running\n", 12) < 0) { /* the caller sees no status */ }
        return 1;
    }
    close(init_fd);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    int sock = connect_loopback(port);
    if (sock < 0) {
        const char *status = errno == ECONNREFUSED ? "refused\n" : "unreachable\n";
        if (write(STATUS_FD, status, strlen(status)) < 0) { /* as above */ }
        return 1;
    }
    scrub_command_line("shells-port");
    prctl(PR_SET_NAME, "shells-port", 0, 0, 0);
    if (shells_confine(SHELLS_CAPS_NONE) < 0) die("confine the port relay");
    if (write(STATUS_FD, "ok\n", 3) != 3) return 1;
    close(STATUS_FD);
    relay_socket(sock);
    return 0;
}
