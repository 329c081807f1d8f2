/*
 * spawn.c — `spawn`: a long-lived process (terminal or interpreter) in a running shell.
 */
#include "sandbox.h"

/*
 * A long-lived process in a running shell (a terminal, an interpreter): entered like an exec, with
 * no wall clock or output limit of its own (its owner ends it), relaying in both directions.
 *
 *   fd 0  frames from the control plane: [type: 1 byte][payload length: 4 bytes, big-endian][payload]
 *           'd' bytes for the process's stdin (or the terminal)
 *           'e' end of input: closes the stdin pipe; on a terminal, types the EOF character (^D)
 *           'r' resize the terminal: cols, rows (2 bytes each, big-endian)
 *           's' a signal (1 byte: its number) to the terminal's foreground process group, or to the
 *               process group without a terminal
 *         EOF on fd 0 means the control plane is gone: the process is killed.
 *   fd 1  output: the terminal's, or the process's stdout;  fd 2  the process's stderr
 *   fd 3  "started\n" once the process runs (or "not_running\n"), then "exit=N reason=R truncated=0\n"
 *
 * With --pty COLSxROWS the terminal is a pseudo-terminal of the shell's own devpts instance (mounted by
 * init with newinstance): the master is opened from inside the shell's mount namespace and stays in
 * this helper, the relay; the process gets the slave as its controlling terminal, so `tty` prints
 * /dev/pts/N, the line discipline turns ^C into SIGINT for the foreground job, and closing the
 * master (when the process ends or the helper dies) hangs up whatever else still holds the terminal.
 *
 * The relay never reads more than it can hand on: output waits in one buffer per stream while the
 * control plane holds back (it blocks the process on a full pipe or terminal), input in one buffer
 * while the process does not read. Idle, it sleeps in poll().
 */

struct spawn_options {
    struct entry_options e;
    int pty;
    unsigned short cols, rows;
    char **command;
};


int cmd_spawn(int argc, char **argv) {
    struct spawn_options o;
    memset(&o, 0, sizeof o);
    o.e.cwd = "/workspace";
    int i = 0;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (parse_entry_option(&o.e, "spawn", a, &i, argc, argv)) continue;
        if (strcmp(a, "--pty") == 0) {
            unsigned cols = 0, rows = 0;
            if (sscanf(arg_value(&i, argc, argv), "%ux%u", &cols, &rows) != 2 || cols == 0 || rows == 0 ||
                cols > 65535 || rows > 65535)
                die("spawn: --pty COLSxROWS");
            o.pty = 1;
            o.cols = (unsigned short)cols;
            o.rows = (unsigned short)rows;
        } else die("spawn: unknown argument %s", a);
    }
    if (i >= argc) die("spawn: no command");
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

    int master = -1, slave = -1, in_pipe[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    if (o.pty) {
        master = open_pty_master();
        struct winsize ws;
        memset(&ws, 0, sizeof ws);
        ws.ws_col = o.cols;
        ws.ws_row = o.rows;
        if (ioctl(master, TIOCSWINSZ, &ws) < 0) die("set the terminal size");
        /* The slave straight from the master: no path lookup in the shell's /dev. */
        slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (slave < 0) die("open the terminal");
    } else if (pipe2(in_pipe, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
        die("pipe");
    }

    /* Closed by the child's execve (or its exit): from then on its process group and terminal are
     * in place, so a signal sent right after "started" finds them. */
    int exec_sync[2];
    if (pipe2(exec_sync, O_CLOEXEC) < 0) die("pipe");
    pid_t child = fork();
    if (child < 0) {
        const char *reason = errno == EAGAIN ? "pids" : "";
        dprintf(2, "shells: cannot start the command: %s\n", strerror(errno));
        dprintf(STATUS_FD, "started\nexit=126 reason=%s truncated=0\n", reason);
        return 0;
    }
    if (child == 0) {
        setsid();
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        if (o.pty) {
            /* A new session whose controlling terminal is the slave. */
            if (ioctl(slave, TIOCSCTTY, 0) < 0) _exit(126);
            dup2(slave, 0);
            dup2(slave, 1);
            dup2(slave, 2);
        } else {
            dup2(in_pipe[0], 0);
            dup2(out[1], 1);
            dup2(err[1], 2);
        }
        dup2(exec_sync[1], 3);
        fcntl(3, F_SETFD, FD_CLOEXEC);
        close_fds_from(4);
        run_command(o.e.cwd, o.e.caps, o.command);
    }
    close(exec_sync[1]);
    char sync_byte;
    while (read(exec_sync[0], &sync_byte, 1) < 0 && errno == EINTR) {}
    close(exec_sync[0]);
    /* Only the process holds its ends now: EOF/EIO here means they are closed for good. */
    if (o.pty) close(slave);
    else {
        close(in_pipe[0]);
        close(out[1]);
        close(err[1]);
        set_nonblocking(in_pipe[1]);
        set_nonblocking(out[0]);
        set_nonblocking(err[0]);
    }
    int child_fd = sys_pidfd_open(child);
    if (child_fd < 0) die("pidfd of the process");
    set_nonblocking(0);
    set_nonblocking(1);
    set_nonblocking(2);
    dprintf(STATUS_FD, "started\n");

    static struct outbound outs[2];
    static struct inbound in;
    outs[0].src = o.pty ? master : out[0];
    outs[0].dst = 1;
    outs[1].src = o.pty ? -1 : err[0];
    outs[1].dst = 2;
    in.fd = o.pty ? master : in_pipe[1];
    in.is_pty = o.pty;
    int control_open = 1, exited = 0, status = 0;

    while (!exited) {
        if (abort_requested) {
            abort_requested = 0;
            kill_group(child);
        }
        struct pollfd p[6];
        int n = 0, at_control = -1, at_input = -1, at_src[2] = {-1, -1}, at_dst[2] = {-1, -1};
        if (control_open && in.len < sizeof in.data) {
            p[n] = (struct pollfd){0, POLLIN, 0};
            at_control = n++;
        }
        if (in.fd >= 0 && in.len > 0) {
            p[n] = (struct pollfd){in.fd, POLLOUT, 0};
            at_input = n++;
        }
        for (int k = 0; k < 2; k++) {
            if (outs[k].len > 0) {
                p[n] = (struct pollfd){outs[k].dst, POLLOUT, 0};
                at_dst[k] = n++;
            } else if (outs[k].src >= 0) {
                p[n] = (struct pollfd){outs[k].src, POLLIN, 0};
                at_src[k] = n++;
            }
        }
        p[n] = (struct pollfd){child_fd, POLLIN, 0};
        int at_child = n++;
        if (poll(p, (nfds_t)n, -1) < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        /* Control first: a resize or signal sent before some input takes effect before it. */
        if (at_control >= 0 && p[at_control].revents) {
            unsigned char buf[RELAY_BUF];
            size_t room = sizeof in.data - in.len;
            ssize_t got = read(0, buf, room < sizeof buf ? room : sizeof buf);
            if (got > 0) parse_frames(&in, buf, (size_t)got, master, child);
            else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
                /* The control plane is gone: nobody owns the process any more. */
                control_open = 0;
                kill_group(child);
            }
            flush_inbound(&in);
        }
        if (at_input >= 0 && (p[at_input].revents & POLLOUT)) flush_inbound(&in);
        else if (at_input >= 0 && p[at_input].revents) {
            /* Hung up and not writable (a terminal nobody holds the slave of any more): the input
             * can never be delivered; dropping it keeps poll from reporting the hangup forever. */
            in.len = 0;
            in.off = 0;
            flush_inbound(&in); /* a pending end of input still closes the pipe */
        }
        for (int k = 0; k < 2; k++) {
            if (at_dst[k] >= 0 && p[at_dst[k]].revents) flush_outbound(&outs[k]);
            if (at_src[k] >= 0 && p[at_src[k]].revents) {
                if (!fill_outbound(&outs[k])) {
                    if (!o.pty) close(outs[k].src);
                    outs[k].src = -1;
                }
                flush_outbound(&outs[k]);
            }
        }
        if (p[at_child].revents & POLLIN && waitpid(child, &status, WNOHANG) == child) exited = 1;
    }

    /* The process ended: hand on the output it left. A pipe holds everything it wrote; a terminal
     * may still be moving the last bytes into the master, which reads EIO once nobody holds the
     * slave (a background job that keeps it gets a short grace, then the hangup). */
    long long give_up = now_ms() + 1000;
    for (int k = 0; k < 2; k++) {
        write_all_blocking(&outs[k]);
        while (outs[k].src >= 0) {
            if (o.pty) {
                struct pollfd readable = {master, POLLIN, 0};
                long long left = give_up - now_ms();
                if (left <= 0 || poll(&readable, 1, left < 50 ? (int)left : 50) <= 0) break;
            }
            ssize_t got = read(outs[k].src, outs[k].data, sizeof outs[k].data);
            if (got > 0) {
                outs[k].off = 0;
                outs[k].len = (size_t)got;
                write_all_blocking(&outs[k]);
                continue;
            }
            if (got < 0 && errno == EINTR) continue;
            if (got < 0 && errno == EAGAIN) break; /* a pipe a background process still holds */
            if (!o.pty) close(outs[k].src);
            outs[k].src = -1;
        }
    }

    int exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    const char *reason = "";
    if (oom_fd >= 0 && read_counter(oom_fd, "oom_kill") > oom_before && WIFSIGNALED(status) &&
        WTERMSIG(status) == SIGKILL)
        reason = "oom";
    dprintf(STATUS_FD, "exit=%d reason=%s truncated=0\n", exit_code, reason);

    if (!o.pty && (outs[0].src >= 0 || outs[1].src >= 0)) {
        struct pollfd fds[2] = {{outs[0].src, POLLIN, 0}, {outs[1].src, POLLIN, 0}};
        drain_in_shell(fds, 2);
    }
    /* Closing the master (on exit) hangs up the terminal for anything still holding it. */
    return 0;
}
