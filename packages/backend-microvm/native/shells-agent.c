/*
 * shells-agent: the guest's init and the host's only way in.
 *
 * Runs as PID 1 from a tiny initramfs: loads the virtio modules the Debian cloud kernel ships as
 * modules (and shells_mmio, which registers the virtio-mmio devices named on the command line),
 * mounts the shell's disk (/dev/vda) and moves into it, then serves the framed protocol of
 * agent-protocol.h over the virtio-serial port named "shells.agent". Execs run in their own
 * session (process group) so a wall clock, an output limit or a kill from the host ends the whole
 * group. As PID 1 it also reaps every orphan in the guest.
 *
 * Limits: cgroup v2 is mounted at boot with one shell-wide group ("shell") whose pids.max and
 * memory.max are the shell's limits (sent by the host after each restore or boot: a template is
 * saved without them). Each exec runs in its own group below it, so its counters say what it did;
 * the agent stays in the root group, outside the limits, and can always fork and answer.
 *
 * Static (gcc -static): the guest image needs no interpreter or libc of a particular version.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "agent-protocol.h"

#define GRACE_AFTER_EXIT_MS 200

#ifndef EXT4_IOC_RESIZE_FS
#define EXT4_IOC_RESIZE_FS _IOW('f', 16, uint64_t) /* online growth of a mounted ext4 */
#endif

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41) /* Linux 4.13: the pty's other end, without a path lookup */
#endif

#define SHELL_CGROUP "/sys/fs/cgroup/shell"
/* Exec groups that may exist at once: live execs plus those whose exec returned while processes
 * it left still run (bounded by pids.max in practice). */
#define MAX_GROUPS 256
/* Memory kept out of the shell's reach for the guest kernel and this agent: memory.max is at most
 * what the booted guest has available (MemAvailable) less a headroom of a sixteenth of its memory,
 * 8 MiB at least, so a balloon meets the cgroup's OOM killer before the kernel runs short. */
#define MIN_HEADROOM_BYTES (8ull << 20)

struct buffer {
  uint8_t *data;
  size_t len, cap;
};

struct exec {
  int used;
  uint16_t id;
  pid_t pid;
  int exited, status;
  int out_fd, err_fd, in_fd;
  struct buffer in_pending;
  int in_close_pending;
  uint64_t max_output, output;
  int64_t deadline_ms, exited_at_ms;
  int64_t began_us, started_us, reaped_us; /* EXEC taken, process started, reaped (EXIT's timing) */
  uint32_t kill_reason;
  int truncated;
  int group; /* index into groups, or -1 */
  uint64_t oom_kills_at_start; /* the shell's oom_kill count when the exec started */
  int spawned; /* a SPAWN: no wall clock or output limit, ended when the host goes away */
  int pty;     /* out_fd is a pty's master (in_fd a copy of it), err_fd unused */
  int paused;  /* the host asked (FLOW) not to read its output for now */
};

/* One exec's cgroup; outlives its exec while processes it left run. */
struct group {
  int used;
  int spare; /* made ahead for the next exec (see new_group), no process in it yet */
  char path[64];
  int pids_events_fd; /* polled for POLLPRI: a fork refused in this group */
  struct exec *exec;  /* NULL once the exec has returned */
};

static struct group groups[MAX_GROUPS];
static int cgroups_ready;
static int shell_pids_events_fd = -1;
static uint64_t memory_cap; /* bytes the shell may use at most; found at the first LIMITS */
static uint64_t disk_full_bytes; /* free bytes on / at or below which a failed exec hit the disk */

static struct exec execs[AGENT_MAX_EXECS];
static int port_fd = -1;
static int host_connected = 1;
static struct buffer rx;

static void log_console(const char *message) {
  int fd = open("/dev/console", O_WRONLY | O_NOCTTY);
  if (fd < 0) return;
  dprintf(fd, "shells-agent: %s (%s)\n", message, strerror(errno));
  close(fd);
}

static void die(const char *message) {
  log_console(message);
  /* PID 1 exiting panics the kernel; with panic=-1 and -no-reboot QEMU then exits. */
  _exit(1);
}

static int64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t now_ms(void) { return now_us() / 1000; }

static void buffer_append(struct buffer *b, const void *data, size_t len) {
  if (b->len + len > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + len) cap *= 2;
    b->data = realloc(b->data, cap);
    if (!b->data) die("out of memory");
    b->cap = cap;
  }
  memcpy(b->data + b->len, data, len);
  b->len += len;
}

static void buffer_consume(struct buffer *b, size_t len) {
  memmove(b->data, b->data + len, b->len - len);
  b->len -= len;
}

static void put_u16(uint8_t *p, uint16_t v) {
  p[0] = v;
  p[1] = v >> 8;
}
static void put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = v >> (8 * i);
}
static uint32_t get_u32(const uint8_t *p) {
  return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const uint8_t *p) { return get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }

static void write_all(int fd, const uint8_t *data, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, data, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        poll(&p, 1, 100);
        continue;
      }
      return; /* the host went away: the frame is lost, the exec goes on */
    }
    data += n;
    len -= n;
  }
}

/* Frames up to this payload go out in one write: one virtio-serial buffer, one notification of
 * the host and one wake of its reader, where header and payload apart cost two of each. */
#define ONE_WRITE_PAYLOAD 65536

static void send_frame(uint16_t type, uint16_t id, const void *payload, uint32_t len) {
  static uint8_t frame[AGENT_HEADER_BYTES + ONE_WRITE_PAYLOAD];
  put_u32(frame, len);
  put_u16(frame + 4, type);
  put_u16(frame + 6, id);
  if (len <= ONE_WRITE_PAYLOAD) {
    if (len) memcpy(frame + AGENT_HEADER_BYTES, payload, len);
    write_all(port_fd, frame, AGENT_HEADER_BYTES + len);
    return;
  }
  write_all(port_fd, frame, AGENT_HEADER_BYTES);
  write_all(port_fd, payload, len);
}

static void send_ready(void) {
  struct utsname u;
  uname(&u);
  send_frame(AGENT_FRAME_READY, 0, u.release, strlen(u.release));
}

/* ---- boot ---------------------------------------------------------------------------------- */

static const char *MODULES[] = {"virtio_ring", "virtio",     "virtio_mmio",
                                "shells_mmio", "virtio_blk", "virtio_console"};

/* The virtio-mmio devices QEMU wrote on the kernel command line ("virtio_mmio.device=<d>", one
 * token each), as shells_mmio's parameter "device=<d>,<d>,...": the kernel's virtio_mmio module
 * cannot take them itself (no CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES in Debian's kernels). */
static void mmio_devices(char *out, size_t size) {
  static const char prefix[] = "virtio_mmio.device=";
  char cmdline[4096] = {0};
  int fd = open("/proc/cmdline", O_RDONLY);
  out[0] = 0;
  if (fd < 0) return;
  ssize_t n = read(fd, cmdline, sizeof cmdline - 1);
  close(fd);
  if (n <= 0) return;
  for (char *tok = strtok(cmdline, " \n"); tok; tok = strtok(NULL, " \n")) {
    if (strncmp(tok, prefix, sizeof prefix - 1) != 0) continue;
    const char *value = tok + sizeof prefix - 1;
    if (strlen(out) + strlen(value) + 9 > size) break;
    strcat(out, out[0] ? "," : "device=");
    strcat(out, value);
  }
}

static void load_modules(void) {
  char path[128], params[2048];
  for (size_t i = 0; i < sizeof MODULES / sizeof *MODULES; i++) {
    snprintf(path, sizeof path, "/modules/%s.ko", MODULES[i]);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die(path);
    params[0] = 0;
    if (strcmp(MODULES[i], "shells_mmio") == 0) mmio_devices(params, sizeof params);
    if (syscall(SYS_finit_module, fd, params, 0) != 0 && errno != EEXIST) die(path);
    close(fd);
  }
}

static void wait_for(const char *path, int timeout_ms) {
  int64_t until = now_ms() + timeout_ms;
  while (access(path, F_OK) != 0) {
    if (now_ms() > until) die(path);
    usleep(2000);
  }
}

/*
 * The guest's only interface: up for `localhost`, down for `sealed` (no networking at all). A
 * loopback that was up keeps its local routes when it goes down, so connects to 127.0.0.1 would
 * hang instead of failing: its address goes first (0.0.0.0 deletes it), which takes the routes
 * with it, and a connect fails at once with ENETUNREACH. Brought up again, the kernel gives it
 * 127.0.0.1/8 back by itself.
 */
static int set_loopback(int up) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  struct ifreq ifr = {0};
  strcpy(ifr.ifr_name, "lo");
  if (!up) {
    struct sockaddr_in *address = (struct sockaddr_in *)&ifr.ifr_addr;
    address->sin_family = AF_INET;
    ioctl(s, SIOCSIFADDR, &ifr); /* EADDRNOTAVAIL once gone: nothing to delete */
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
  }
  int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
  if (rc == 0) {
    if (up) ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    else ifr.ifr_flags &= ~IFF_UP;
    rc = ioctl(s, SIOCSIFFLAGS, &ifr);
  }
  int saved = errno;
  close(s);
  errno = saved;
  return rc;
}

/* ---- cgroups ------------------------------------------------------------------------------- */

static int write_file(const char *path, const char *value) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = write(fd, value, strlen(value));
  int saved = errno;
  close(fd);
  errno = saved;
  return n == (ssize_t)strlen(value) ? 0 : -1;
}

/* Reads a small file from the start (which also re-arms poll on a cgroup events file). */
static ssize_t read_at_start(int fd, char *out, size_t size) {
  ssize_t n = pread(fd, out, size - 1, 0);
  out[n > 0 ? n : 0] = 0;
  return n;
}

static ssize_t read_path(const char *path, char *out, size_t size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    out[0] = 0;
    return -1;
  }
  ssize_t n = read_at_start(fd, out, size);
  close(fd);
  return n;
}

/* The number after "key " in a flat-keyed file (memory.events, pids.events, /proc/meminfo). */
static uint64_t keyed_value(const char *text, const char *key) {
  size_t len = strlen(key);
  for (const char *line = text; line && *line; line = strchr(line, '\n')) {
    if (*line == '\n') line++;
    if (strncmp(line, key, len) == 0 && (line[len] == ' ' || line[len] == ':'))
      return strtoull(line + len + 1, NULL, 10);
  }
  return 0;
}

/* A single-number file ("max" reads as UINT64_MAX). */
static uint64_t number_at(const char *path) {
  char text[64];
  if (read_path(path, text, sizeof text) <= 0) return 0;
  if (strncmp(text, "max", 3) == 0) return UINT64_MAX;
  return strtoull(text, NULL, 10);
}

static void setup_cgroups(void) {
  /* favordynmods: moving a task into a cgroup (once per exec) otherwise waits for an RCU grace
   * period, tens of milliseconds in a one-vCPU guest under emulation; forks pay a little instead. */
  if (mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC,
            "favordynmods") != 0 &&
      mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
    return log_console("mount cgroup2 (no pids/memory limits)");
  if (write_file("/sys/fs/cgroup/cgroup.subtree_control", "+memory +pids") != 0 ||
      (mkdir(SHELL_CGROUP, 0755) != 0 && errno != EEXIST) ||
      /* Exec groups get pids only: a memory cgroup per exec made each exec ~65 ms slower under
       * emulation (exec round trip p50 96 ms against 30 ms), so memory is bounded and counted
       * once, for the whole shell. */
      write_file(SHELL_CGROUP "/cgroup.subtree_control", "+pids") != 0)
    return log_console("cgroup controllers (no pids/memory limits)");
  shell_pids_events_fd = open(SHELL_CGROUP "/pids.events", O_RDONLY | O_CLOEXEC);
  cgroups_ready = 1;
}

/*
 * Grows the root filesystem to fill a disk the host made `bytes` long. After a restore the guest
 * still knows the template's disk size until the host's resize notice arrives, so this waits (5 s
 * at most) for the disk to show its size; then ext4 grows online. Growing to the size it has
 * already is a no-op. Returns 0 or an errno.
 */
static int grow_root(uint64_t bytes) {
  char text[32];
  int64_t until = now_ms() + 5000;
  while (read_path("/sys/block/vda/size", text, sizeof text) <= 0 ||
         strtoull(text, NULL, 10) * 512 < bytes) {
    if (now_ms() > until) return ETIMEDOUT;
    usleep(2000);
  }
  struct statvfs fs;
  if (statvfs("/", &fs) != 0) return errno;
  uint64_t blocks = bytes / fs.f_bsize;
  int fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  int rc = ioctl(fd, EXT4_IOC_RESIZE_FS, &blocks) == 0 ? 0 : errno;
  close(fd);
  return rc;
}

/* ---- egress: listeners in the guest, relayed to the host as streams ------------------------ */

/*
 * A shell given an egress proxy reaches it only through these listeners, owned by this agent: the
 * guest has no network interface but `lo`, so nothing else leaves it. Each accepted connection
 * (and each DNS datagram) becomes a stream of NET_* frames; the host connects it to the shell's
 * egress proxy and names the destination itself (for the transparent ports 80 and 443, the address
 * the client dialled, which the host checks). Flow control is by credit both ways
 * (AGENT_NET_WINDOW per stream and direction), so the agent's memory per stream is bounded; with
 * every stream slot busy the listeners are not polled and new connections wait in the backlog.
 */

#define DNS_MAX_MESSAGE 4096
#define DNS_TIMEOUT_MS 6000

enum { STREAM_FREE, STREAM_OPEN, STREAM_CLOSING, STREAM_DRAINING };

struct stream {
  int state;
  uint16_t id;
  int fd;              /* the client's connection; -1 for a datagram or once closed */
  int up_eof;          /* the client's end of data was sent to the host */
  uint32_t up_unacked; /* bytes sent to the host and not yet credited */
  struct buffer down;  /* bytes from the host not yet written to the client */
  int down_eof;        /* the host ended its direction: shut the client's down once written */
  int datagram;        /* a DNS question over UDP: the answer goes back with sendto */
  struct sockaddr_in client;
  int64_t deadline_ms; /* datagrams only: no answer by then, no answer at all */
};

static struct stream streams[AGENT_MAX_STREAMS];
static int listen_proxy = -1, listen_dns_tcp = -1, listen_dns_udp = -1;
static int listen_http = -1, listen_https = -1;

static int listen_on(int type, const char *address, int port) {
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, address, &sa.sin_addr);
  int fd = socket(AF_INET, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || (type == SOCK_STREAM && listen(fd, 128) != 0)) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

/*
 * The resolver for `internet`: /etc/resolv.conf is covered (read-only bind) by a file naming
 * 127.0.0.53, whatever the image held; the shell's disk is not written.
 */
static int point_resolver_at_egress(void) {
  static const char conf[] = "nameserver 127.0.0.53\n";
  struct stat st;
  mkdir("/run/shells", 0755);
  int fd = open("/run/shells/resolv.conf", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0 || write(fd, conf, sizeof conf - 1) != (ssize_t)(sizeof conf - 1)) {
    if (fd >= 0) close(fd);
    return -1;
  }
  close(fd);
  if (lstat("/etc/resolv.conf", &st) != 0 || !S_ISREG(st.st_mode)) {
    /* No file (or a link into /run): make one there. */
    unlink("/etc/resolv.conf");
    if (symlink("/run/shells/resolv.conf", "/etc/resolv.conf") != 0) return -1;
    return 0;
  }
  if (mount("/run/shells/resolv.conf", "/etc/resolv.conf", NULL, MS_BIND, NULL) != 0) return -1;
  mount(NULL, "/etc/resolv.conf", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  return 0;
}

static void add_route_attribute(struct nlmsghdr *message, int type, const void *data, size_t len) {
  struct rtattr *attribute = (struct rtattr *)((char *)message + NLMSG_ALIGN(message->nlmsg_len));
  attribute->rta_type = (unsigned short)type;
  attribute->rta_len = (unsigned short)RTA_LENGTH(len);
  memcpy(RTA_DATA(attribute), data, len);
  message->nlmsg_len = NLMSG_ALIGN(message->nlmsg_len) + RTA_ALIGN(attribute->rta_len);
}

/*
 * For `internet`: every IPv4 address is local (`ip route add local 0.0.0.0/0 dev lo src
 * 127.0.0.1`), so a connection to any address's port 80 or 443 reaches the agent's transparent
 * listeners, and one to any other port is refused at once by the guest's own kernel: nothing
 * leaves the guest but through the agent (it has no other interface). Clients connect from
 * 127.0.0.1 (the route's source), like every client of the egress listeners. Replacing keeps it
 * idempotent: LIMITS comes again after every restore and reconnect.
 */
static int route_all_to_loopback(void) {
  struct {
    struct nlmsghdr header;
    struct rtmsg route;
    char attributes[64];
  } request = {0};
  request.header.nlmsg_len = NLMSG_LENGTH(sizeof request.route);
  request.header.nlmsg_type = RTM_NEWROUTE;
  request.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
  request.header.nlmsg_seq = 1;
  request.route.rtm_family = AF_INET;
  request.route.rtm_dst_len = 0;
  request.route.rtm_table = RT_TABLE_MAIN;
  request.route.rtm_protocol = RTPROT_BOOT;
  request.route.rtm_scope = RT_SCOPE_HOST;
  request.route.rtm_type = RTN_LOCAL;
  uint32_t lo = if_nametoindex("lo");
  struct in_addr source = {.s_addr = htonl(INADDR_LOOPBACK)};
  if (lo == 0) return -1;
  add_route_attribute(&request.header, RTA_OIF, &lo, sizeof lo);
  add_route_attribute(&request.header, RTA_PREFSRC, &source, sizeof source);
  int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (s < 0) return -1;
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  int rc = -1;
  union {
    struct nlmsghdr header;
    char bytes[512];
  } answer;
  if (sendto(s, &request, request.header.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) ==
      (ssize_t)request.header.nlmsg_len) {
    ssize_t n = recv(s, &answer, sizeof answer, 0);
    if (n >= (ssize_t)NLMSG_LENGTH(sizeof(struct nlmsgerr)) && answer.header.nlmsg_type == NLMSG_ERROR) {
      int error = ((struct nlmsgerr *)NLMSG_DATA(&answer.header))->error;
      if (error == 0) rc = 0;
      else errno = -error;
    } else {
      errno = EPROTO;
    }
  }
  int saved = errno;
  close(s);
  errno = saved;
  return rc;
}

/* Opens the listeners `egress` names (once; a shell's mode does not change while it runs). */
static int open_egress(uint32_t egress) {
  if (egress >= AGENT_EGRESS_BINDINGS && listen_proxy < 0 &&
      (listen_proxy = listen_on(SOCK_STREAM, "127.0.0.1", 3128)) < 0)
    return errno;
  if (egress >= AGENT_EGRESS_INTERNET && listen_dns_tcp < 0) {
    if ((listen_dns_tcp = listen_on(SOCK_STREAM, "127.0.0.53", 53)) < 0) return errno;
    if ((listen_dns_udp = listen_on(SOCK_DGRAM, "127.0.0.53", 53)) < 0) return errno;
    if (point_resolver_at_egress() != 0) return errno ? errno : EIO;
  }
  if (egress >= AGENT_EGRESS_INTERNET && listen_https < 0) {
    if ((listen_http = listen_on(SOCK_STREAM, "0.0.0.0", 80)) < 0) return errno;
    if ((listen_https = listen_on(SOCK_STREAM, "0.0.0.0", 443)) < 0) return errno;
  }
  if (egress >= AGENT_EGRESS_INTERNET && route_all_to_loopback() != 0) return errno ? errno : EIO;
  return 0;
}

static struct stream *find_stream(uint16_t id) {
  for (int i = 0; i < AGENT_MAX_STREAMS; i++)
    if (streams[i].state != STREAM_FREE && streams[i].state != STREAM_DRAINING && streams[i].id == id)
      return &streams[i];
  return NULL;
}

/* A free slot, and an id no live stream uses (slot i has id i + 1, so none is ever shared). */
static struct stream *free_stream(void) {
  for (int i = 0; i < AGENT_MAX_STREAMS; i++)
    if (streams[i].state == STREAM_FREE) {
      memset(&streams[i], 0, sizeof streams[i]);
      streams[i].id = (uint16_t)(i + 1);
      streams[i].fd = -1;
      return &streams[i];
    }
  return NULL;
}

static void release_stream(struct stream *s) {
  if (s->fd >= 0) close(s->fd);
  free(s->down.data);
  memset(s, 0, sizeof *s);
  s->fd = -1;
}

/* The client is done (or failed): tell the host, and keep the id until its NET_CLOSE comes. */
static void close_stream(struct stream *s) {
  if (s->state != STREAM_OPEN) return;
  if (s->fd >= 0) close(s->fd);
  s->fd = -1;
  s->down.len = 0;
  s->state = STREAM_CLOSING;
  send_frame(AGENT_FRAME_NET_CLOSE, s->id, NULL, 0);
}

/* Tells the host of a new stream; `destination` (TRANSPARENT only) is the address dialled. */
static void open_stream(struct stream *s, uint32_t listener, const struct sockaddr_in *client,
                        const struct sockaddr_in *destination) {
  uint8_t head[AGENT_NET_OPEN_TRANSPARENT_BYTES];
  put_u32(head, listener);
  memcpy(head + 4, &client->sin_addr, 4);
  put_u32(head + 8, ntohs(client->sin_port));
  if (destination) {
    memcpy(head + 12, &destination->sin_addr, 4);
    put_u32(head + 16, ntohs(destination->sin_port));
  }
  s->state = STREAM_OPEN;
  s->client = *client;
  send_frame(AGENT_FRAME_NET_OPEN, s->id, head, destination ? AGENT_NET_OPEN_TRANSPARENT_BYTES : AGENT_NET_OPEN_BYTES);
}

static void accept_stream(int listener_fd, uint32_t listener) {
  struct sockaddr_in client, destination;
  socklen_t len = sizeof client, destination_len = sizeof destination;
  int fd = accept4(listener_fd, (struct sockaddr *)&client, &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd < 0) return;
  struct stream *s = free_stream();
  /* A transparent listener's connection is local (the route above): its local address is the
   * one the client dialled. */
  int transparent = listener == AGENT_LISTENER_TRANSPARENT;
  if (!s || client.sin_family != AF_INET ||
      (transparent && (getsockname(fd, (struct sockaddr *)&destination, &destination_len) != 0 ||
                       destination.sin_family != AF_INET))) {
    close(fd);
    return;
  }
  s->fd = fd;
  open_stream(s, listener, &client, transparent ? &destination : NULL);
}

/* One DNS question over UDP: a stream of its own carrying it length-prefixed, then end of data. */
static void accept_datagram(void) {
  uint8_t packet[2 + DNS_MAX_MESSAGE];
  struct sockaddr_in client;
  socklen_t len = sizeof client;
  ssize_t n = recvfrom(listen_dns_udp, packet + 2, DNS_MAX_MESSAGE, 0, (struct sockaddr *)&client, &len);
  if (n <= 0 || client.sin_family != AF_INET) return;
  struct stream *s = free_stream();
  if (!s) return; /* every slot busy: dropped, DNS clients ask again */
  s->datagram = 1;
  s->deadline_ms = now_ms() + DNS_TIMEOUT_MS;
  open_stream(s, AGENT_LISTENER_DNS, &client, NULL);
  packet[0] = (uint8_t)(n >> 8);
  packet[1] = (uint8_t)n;
  send_frame(AGENT_FRAME_NET_DATA, s->id, packet, (uint32_t)n + 2);
  send_frame(AGENT_FRAME_NET_DATA, s->id, NULL, 0);
  s->up_eof = 1;
}

/* Reads what the client sent, as far as the window allows, and passes it to the host. */
static void read_stream(struct stream *s) {
  uint8_t chunk[65536];
  size_t room = AGENT_NET_WINDOW - s->up_unacked;
  if (room > sizeof chunk) room = sizeof chunk;
  if (room == 0) return;
  ssize_t n = read(s->fd, chunk, room);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n < 0) return close_stream(s);
  if (n == 0) {
    s->up_eof = 1;
    send_frame(AGENT_FRAME_NET_DATA, s->id, NULL, 0);
    return;
  }
  s->up_unacked += (uint32_t)n;
  send_frame(AGENT_FRAME_NET_DATA, s->id, chunk, (uint32_t)n);
}

/* Writes what the host sent to the client, crediting the host with what was written. */
static void write_stream(struct stream *s) {
  uint32_t written = 0;
  while (s->fd >= 0 && s->down.len > 0) {
    ssize_t n = send(s->fd, s->down.data, s->down.len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) {
      if (s->state == STREAM_DRAINING) release_stream(s);
      else close_stream(s);
      return;
    }
    buffer_consume(&s->down, (size_t)n);
    written += (uint32_t)n;
  }
  if (written && s->state == STREAM_OPEN) {
    uint8_t credit[4];
    put_u32(credit, written);
    send_frame(AGENT_FRAME_NET_CREDIT, s->id, credit, sizeof credit);
  }
  if (s->down.len == 0 && s->down_eof && s->fd >= 0) shutdown(s->fd, SHUT_WR);
  if (s->down.len == 0 && s->state == STREAM_DRAINING) release_stream(s);
}

/* A DNS answer is complete: back to its client, and the stream is done. */
static void answer_datagram(struct stream *s) {
  if (s->down.len < 2) return;
  size_t want = (size_t)s->down.data[0] << 8 | s->down.data[1];
  if (s->down.len < 2 + want) return;
  sendto(listen_dns_udp, s->down.data + 2, want, 0, (struct sockaddr *)&s->client, sizeof s->client);
  s->down.len = 0;
  close_stream(s);
}

static void handle_net_frame(uint16_t type, uint16_t id, const uint8_t *payload, uint32_t len) {
  struct stream *s = find_stream(id);
  if (!s) return;
  switch (type) {
  case AGENT_FRAME_NET_DATA:
    if (s->state != STREAM_OPEN) break;
    if (len == 0) {
      s->down_eof = 1;
    } else if (s->down.len + len > (s->datagram ? 2 + DNS_MAX_MESSAGE : AGENT_NET_WINDOW)) {
      close_stream(s); /* past the window: the host is out of step */
      break;
    } else {
      buffer_append(&s->down, payload, len);
    }
    if (s->datagram) answer_datagram(s);
    else write_stream(s);
    break;
  case AGENT_FRAME_NET_CREDIT:
    if (len >= 4) s->up_unacked -= get_u32(payload) < s->up_unacked ? get_u32(payload) : s->up_unacked;
    break;
  case AGENT_FRAME_NET_CLOSE:
    /* The host is done with the id. What it sent before still goes to the client. */
    if (s->state == STREAM_OPEN && s->fd >= 0 && s->down.len > 0) {
      s->state = STREAM_DRAINING;
      s->down_eof = 1;
    } else {
      release_stream(s);
    }
    break;
  }
}

/* The host went away: every stream goes with it (their ids mean nothing to the next host). */
static void close_all_streams(void) {
  for (int i = 0; i < AGENT_MAX_STREAMS; i++)
    if (streams[i].state != STREAM_FREE) release_stream(&streams[i]);
}

static void expire_datagrams(int64_t now) {
  for (int i = 0; i < AGENT_MAX_STREAMS; i++)
    if (streams[i].state == STREAM_OPEN && streams[i].datagram && now >= streams[i].deadline_ms)
      close_stream(&streams[i]);
}

static int streams_free(void) {
  for (int i = 0; i < AGENT_MAX_STREAMS; i++)
    if (streams[i].state == STREAM_FREE) return 1;
  return 0;
}

/* Applies the shell's limits and network; answers with the errno (0) and what was applied. */
static void set_limits(const uint8_t *p, uint32_t len) {
  uint8_t answer[24] = {0};
  uint32_t error = 0;
  uint64_t memory = 0, filesystem = 0;
  uint32_t pids = 0;
  if (len < AGENT_LIMITS_BYTES) {
    error = EINVAL;
  } else if (!cgroups_ready) {
    error = EOPNOTSUPP;
  } else {
    memory = get_u64(p);
    pids = get_u32(p + 8);
    uint64_t disk = get_u64(p + 12);
    disk_full_bytes = get_u64(p + 20);
    if (!memory_cap) {
      char meminfo[4096];
      read_path("/proc/meminfo", meminfo, sizeof meminfo);
      uint64_t total = keyed_value(meminfo, "MemTotal") << 10;
      uint64_t available = keyed_value(meminfo, "MemAvailable") << 10;
      uint64_t headroom = total / 16 > MIN_HEADROOM_BYTES ? total / 16 : MIN_HEADROOM_BYTES;
      memory_cap = available > 2 * headroom ? available - headroom : available / 2;
    }
    if (memory > memory_cap) memory = memory_cap;
    char value[32];
    snprintf(value, sizeof value, "%llu", (unsigned long long)memory);
    if (write_file(SHELL_CGROUP "/memory.max", value) != 0) error = errno;
    write_file(SHELL_CGROUP "/memory.swap.max", "0"); /* absent without swap accounting */
    snprintf(value, sizeof value, "%u", pids);
    if (!error && write_file(SHELL_CGROUP "/pids.max", value) != 0) error = errno;
    if (!error && set_loopback(get_u32(p + 28) != 0) != 0) error = errno;
    if (!error) error = open_egress(get_u32(p + 32));
    if (!error && disk) error = grow_root(disk);
    struct statvfs fs;
    if (statvfs("/", &fs) == 0) filesystem = (uint64_t)fs.f_blocks * fs.f_frsize;
  }
  put_u32(answer, error);
  put_u32(answer + 4, (uint32_t)memory);
  put_u32(answer + 8, (uint32_t)(memory >> 32));
  put_u32(answer + 12, pids);
  put_u32(answer + 16, (uint32_t)filesystem);
  put_u32(answer + 20, (uint32_t)(filesystem >> 32));
  send_frame(AGENT_FRAME_LIMITS, 0, answer, sizeof answer);
}

/* Whether the root filesystem is (nearly) full, in blocks or inodes: a failure there is the
 * shell's disk limit. */
static int root_full(void) {
  struct statvfs fs;
  if (!disk_full_bytes || statvfs("/", &fs) != 0) return 0;
  return (uint64_t)fs.f_bavail * fs.f_frsize <= disk_full_bytes || fs.f_favail == 0;
}

/* Makes an empty group in a free slot; its index, or -2. */
static int make_group(void) {
  static unsigned seq;
  for (int i = 0; i < MAX_GROUPS; i++) {
    struct group *g = &groups[i];
    if (g->used) continue;
    snprintf(g->path, sizeof g->path, SHELL_CGROUP "/x%u", ++seq);
    if (mkdir(g->path, 0755) != 0) return -2;
    char file[96];
    snprintf(file, sizeof file, "%s/pids.events", g->path);
    g->pids_events_fd = open(file, O_RDONLY | O_CLOEXEC);
    g->used = 1;
    return i;
  }
  return -2;
}

/* The group made ahead for the next exec, or -1. */
static int spare_group = -1;

/* Makes the next exec's group while nothing waits for it (after an exec's EXIT went out): a
 * cgroup's mkdir is then off the critical path of an exec's round trip. */
static void make_spare_group(void) {
  if (!cgroups_ready || spare_group >= 0) return;
  int i = make_group();
  if (i < 0) return;
  groups[i].spare = 1;
  spare_group = i;
}

/* A fresh cgroup for one exec; -1 without cgroups (then the exec runs unconfined). */
static int new_group(struct exec *e) {
  if (!cgroups_ready) return -1;
  int i = spare_group >= 0 ? spare_group : make_group();
  spare_group = -1;
  if (i < 0) return -2;
  groups[i].spare = 0;
  groups[i].exec = e;
  return i;
}

/* Kills every process in a group: cgroup.kill (atomic against forks), else one by one. */
static void kill_cgroup(struct group *g) {
  char file[96], procs[8192];
  snprintf(file, sizeof file, "%s/cgroup.kill", g->path);
  if (write_file(file, "1") == 0) return;
  snprintf(file, sizeof file, "%s/cgroup.procs", g->path);
  for (int round = 0; round < 50 && read_path(file, procs, sizeof procs) > 0; round++)
    for (char *line = strtok(procs, "\n"); line; line = strtok(NULL, "\n")) kill(atoi(line), SIGKILL);
}

/* Removes a group whose exec has returned once nothing runs in it any more. */
static void release_group(int index) {
  struct group *g = &groups[index];
  if (!g->used || g->exec || g->spare) return;
  if (rmdir(g->path) != 0) return; /* EBUSY: processes the exec left still run */
  if (g->pids_events_fd >= 0) close(g->pids_events_fd);
  memset(g, 0, sizeof *g);
}

/* Whether no process is left in a group (its cgroup.events says "populated 0"). */
static int group_empty(const struct group *g) {
  char file[96], events[128];
  snprintf(file, sizeof file, "%s/cgroup.events", g->path);
  return read_path(file, events, sizeof events) > 0 && strstr(events, "populated 0") != NULL;
}

/*
 * After an exec's EXIT went out: a group its exec left empty becomes the next exec's group, so an
 * exec costs no cgroup mkdir or rmdir at all. An empty group holds nothing of its last exec, so
 * what a later exec does in it (its pids, a kill) is still that exec's alone. A group with
 * processes left goes once they are gone (release_group).
 */
static void reuse_or_release_group(int index) {
  struct group *g = &groups[index];
  if (spare_group < 0 && g->used && !g->exec && group_empty(g)) {
    g->spare = 1;
    spare_group = index;
    return;
  }
  release_group(index);
}

/* OOM kills in the shell so far (its memory.events; 0 without cgroups). */
static uint64_t shell_oom_kills(void) {
  char text[512];
  if (!cgroups_ready) return 0;
  read_path(SHELL_CGROUP "/memory.events", text, sizeof text);
  return keyed_value(text, "oom_kill");
}

/*
 * A fork was refused somewhere in the shell. The shell's process limit is shared, so when it is
 * (nearly) full the group holding the most processes is the one that filled it: that group is
 * killed whole (detached descendants too, even after its exec returned) and its exec, if still
 * running, ends with PIDS. Execs that merely tried to fork while the shell was full keep running.
 */
static void check_pids(void) {
  uint64_t limit = number_at(SHELL_CGROUP "/pids.max");
  uint64_t current = number_at(SHELL_CGROUP "/pids.current");
  if (limit == UINT64_MAX || current * 10 < limit * 9) return;
  uint64_t counts[MAX_GROUPS] = {0}, largest = 0;
  char path[96];
  for (int i = 0; i < MAX_GROUPS; i++) {
    if (!groups[i].used) continue;
    snprintf(path, sizeof path, "%s/pids.current", groups[i].path);
    counts[i] = number_at(path);
    if (counts[i] > largest) largest = counts[i];
  }
  for (int i = 0; largest && i < MAX_GROUPS; i++) {
    if (!groups[i].used || counts[i] != largest) continue;
    struct exec *e = groups[i].exec;
    if (e && !e->kill_reason) e->kill_reason = AGENT_KILL_PIDS;
    kill_cgroup(&groups[i]);
  }
}

static void boot(void) {
  mkdir("/dev", 0755);
  mkdir("/proc", 0555);
  mkdir("/sys", 0555);
  mkdir("/root", 0700);
  if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755") != 0) die("mount /dev");
  if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
    die("mount /proc");
  if (mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
    die("mount /sys");
  load_modules();
  wait_for("/dev/vda", 20000);
  if (mount("/dev/vda", "/root", "ext4", 0, NULL) != 0) die("mount /dev/vda");
  /* Move the pseudo filesystems into the shell's root, then make it "/". */
  const char *moved[] = {"/dev", "/proc", "/sys"};
  char target[64];
  for (int i = 0; i < 3; i++) {
    snprintf(target, sizeof target, "/root%s", moved[i]);
    mkdir(target, 0755);
    if (mount(moved[i], target, NULL, MS_MOVE, NULL) != 0) die(target);
  }
  if (chdir("/root") != 0 || mount(".", "/", NULL, MS_MOVE, NULL) != 0 || chroot(".") != 0 ||
      chdir("/") != 0)
    die("switch root");
  mkdir("/tmp", 01777);
  mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  mkdir("/run", 0755);
  mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
  mkdir("/dev/pts", 0755);
  mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666");
  mkdir("/dev/shm", 01777);
  mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  mkdir("/workspace", 0755); /* the shell's working directory, on its own disk layer */
  sethostname("shell", 5);
  set_loopback(1);
  setup_cgroups();
}

/* The port's device node (/dev/vportNpM), found by its name: there is no udev to make a link. */
static int open_port(int timeout_ms) {
  int64_t until = now_ms() + timeout_ms;
  for (;;) {
    DIR *dir = opendir("/sys/class/virtio-ports");
    struct dirent *entry;
    while (dir && (entry = readdir(dir))) {
      if (entry->d_name[0] == '.') continue;
      char path[300], name[64] = {0};
      snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", entry->d_name);
      int fd = open(path, O_RDONLY);
      if (fd < 0) continue;
      ssize_t n = read(fd, name, sizeof name - 1);
      close(fd);
      if (n > 0 && strncmp(name, "shells.agent", 12) == 0) {
        snprintf(path, sizeof path, "/dev/%s", entry->d_name);
        closedir(dir);
        wait_for(path, 5000);
        int port = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (port < 0) die(path);
        /* SIGIO when the host connects or disconnects. */
        fcntl(port, F_SETOWN, getpid());
        fcntl(port, F_SETFL, fcntl(port, F_GETFL) | O_ASYNC);
        return port;
      }
    }
    if (dir) closedir(dir);
    if (now_ms() > until) die("no shells.agent port");
    usleep(2000);
  }
}

/* ---- execs --------------------------------------------------------------------------------- */

static struct exec *find_exec(uint16_t id) {
  for (int i = 0; i < AGENT_MAX_EXECS; i++)
    if (execs[i].used && execs[i].id == id) return &execs[i];
  return NULL;
}

static void kill_group(struct exec *e) {
  if (e->pid > 0) kill(-e->pid, SIGKILL);
  /* A terminal's jobs run in process groups of their own: its cgroup holds them all. */
  if (e->spawned && e->group >= 0) kill_cgroup(&groups[e->group]);
}

/* `e` (NULL for an exec that never started) gives the EXIT its timing (agent-protocol.h). */
static void send_exit(uint16_t id, int32_t code, uint32_t reason, uint32_t truncated,
                      const struct exec *e) {
  uint8_t payload[AGENT_EXIT_BYTES];
  memset(payload, 0, sizeof payload);
  put_u32(payload, (uint32_t)code);
  put_u32(payload + 4, reason);
  put_u32(payload + 8, truncated);
  if (e) {
    int64_t now = now_us();
    put_u32(payload + 12, (uint32_t)(e->started_us - e->began_us));
    put_u32(payload + 16, (uint32_t)(e->reaped_us - e->started_us));
    put_u32(payload + 20, (uint32_t)(now - e->reaped_us));
  }
  send_frame(AGENT_FRAME_EXIT, id, payload, sizeof payload);
}

/* Reads one string (u32 length + bytes) as a fresh NUL-terminated copy; NULL when malformed. */
static char *take_string(const uint8_t **p, const uint8_t *end) {
  if (end - *p < 4) return NULL;
  uint32_t len = get_u32(*p);
  *p += 4;
  if ((uint64_t)(end - *p) < len) return NULL;
  char *s = malloc(len + 1);
  if (!s) die("out of memory");
  memcpy(s, *p, len);
  s[len] = 0;
  *p += len;
  return s;
}

static void fail_exec(uint16_t id, const char *message) {
  send_frame(AGENT_FRAME_STDERR, id, message, strlen(message));
  send_exit(id, 127, AGENT_KILL_NONE, 0, NULL);
}

/* Opens a pty of the guest's devpts and sets its size; the master, and the peer in *peer. */
static int open_pty(uint32_t cols, uint32_t rows, int *peer) {
  int unlock = 0;
  int master = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) return -1;
  struct winsize size = {.ws_row = rows, .ws_col = cols};
  if (ioctl(master, TIOCSPTLCK, &unlock) != 0 || ioctl(master, TIOCSWINSZ, &size) != 0 ||
      (*peer = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
    close(master);
    return -1;
  }
  return master;
}

/* EXEC and SPAWN: the same command layout after a head of their own (see agent-protocol.h). */
static void start_exec(uint16_t id, const uint8_t *p, uint32_t len, int spawned) {
  int64_t began_us = now_us();
  const uint8_t *end = p + len;
  char **argv = NULL, **envp = NULL, *cwd = NULL;
  uint32_t argc = 0, envc = 0;
  struct exec *e = NULL;
  if (find_exec(id)) return fail_exec(id, "shells-agent: exec id in use\n");
  for (int i = 0; i < AGENT_MAX_EXECS; i++)
    if (!execs[i].used) {
      e = &execs[i];
      break;
    }
  if (!e) return fail_exec(id, "shells-agent: too many concurrent execs\n");
  uint32_t timeout_ms = 0, cols = 0, rows = 0;
  uint64_t max_output = UINT64_MAX;
  if (len < (spawned ? 12 : 16)) return fail_exec(id, "shells-agent: malformed exec\n");
  if (spawned) {
    cols = get_u32(p), rows = get_u32(p + 4);
    if (cols > 65535 || rows > 65535) return fail_exec(id, "shells-agent: malformed spawn\n");
    p += 8;
  } else {
    timeout_ms = get_u32(p), max_output = get_u64(p + 4);
    p += 12;
  }
  int pty = cols > 0 && rows > 0;
  argc = get_u32(p);
  p += 4;
  if (argc == 0 || argc > 65536) return fail_exec(id, "shells-agent: malformed exec\n");
  argv = calloc(argc + 1, sizeof *argv);
  for (uint32_t i = 0; i < argc; i++)
    if (!(argv[i] = take_string(&p, end))) goto malformed;
  if (end - p < 4) goto malformed;
  envc = get_u32(p);
  p += 4;
  if (envc > 65536) goto malformed;
  envp = calloc(envc + 1, sizeof *envp);
  for (uint32_t i = 0; i < envc; i++)
    if (!(envp[i] = take_string(&p, end))) goto malformed;
  if (!(cwd = take_string(&p, end))) goto malformed;

  /* A pty stands in for all three pipes: [0] the agent's end (the master), [1] the process's. */
  int out[2] = {-1, -1}, err[2] = {-1, -1}, in[2] = {-1, -1};
  if (pty) {
    if ((out[0] = open_pty(cols, rows, &out[1])) < 0 ||
        (in[1] = fcntl(out[0], F_DUPFD_CLOEXEC, 0)) < 0) {
      if (out[0] >= 0) close(out[0]), close(out[1]);
      fail_exec(id, "shells-agent: no pty for the process\n");
      goto done;
    }
  } else if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) || pipe2(in, O_CLOEXEC)) {
    fail_exec(id, "shells-agent: pipe failed\n");
    goto done;
  }
  int group = new_group(e);
  if (group == -2) {
    int fds[] = {out[0], out[1], err[0], err[1], in[0], in[1]};
    for (int i = 0; i < 6; i++)
      if (fds[i] >= 0) close(fds[i]);
    fail_exec(id, "shells-agent: no cgroup for the exec\n");
    goto done;
  }
  int child_err = pty ? out[1] : err[1];
  char procs[96] = {0};
  if (group >= 0) snprintf(procs, sizeof procs, "%s/cgroup.procs", groups[group].path);
  pid_t pid = fork();
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Into the exec's group before anything runs: every process it starts is counted there. */
    if (procs[0] && write_file(procs, "0") != 0) {
      dprintf(child_err, "shells-agent: joining the exec's cgroup: %s\n", strerror(errno));
      _exit(126);
    }
    setsid();
    if (pty) {
      /* The pty becomes the session's controlling terminal: job control and ^C work in it. */
      ioctl(out[1], TIOCSCTTY, 0);
      dup2(out[1], 0), dup2(out[1], 1), dup2(out[1], 2);
    } else {
      dup2(in[0], 0), dup2(out[1], 1), dup2(err[1], 2);
    }
    if (chdir(cwd) != 0) {
      dprintf(2, "cannot enter %s: %s\n", cwd, strerror(errno));
      _exit(127);
    }
    environ = envp;
    if (!getenv("PATH")) setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);
    execvp(argv[0], argv);
    dprintf(2, "%s: %s\n", argv[0], strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
  }
  close(out[1]);
  if (!pty) close(err[1]), close(in[0]);
  if (pid < 0) {
    close(out[0]);
    if (!pty) close(err[0]);
    close(in[1]);
    if (group >= 0) groups[group].exec = NULL, release_group(group);
    fail_exec(id, "shells-agent: fork failed\n");
    goto done;
  }
  fcntl(out[0], F_SETFL, O_NONBLOCK); /* with a pty: in[1] shares the master's file flags */
  if (!pty) fcntl(err[0], F_SETFL, O_NONBLOCK), fcntl(in[1], F_SETFL, O_NONBLOCK);
  memset(e, 0, sizeof *e);
  e->used = 1;
  e->id = id;
  e->pid = pid;
  e->began_us = began_us;
  e->started_us = now_us();
  e->out_fd = out[0];
  e->err_fd = err[0];
  e->in_fd = in[1];
  e->max_output = max_output;
  e->deadline_ms = spawned ? INT64_MAX : now_ms() + timeout_ms;
  e->spawned = spawned;
  e->pty = pty;
  e->group = group;
  e->oom_kills_at_start = shell_oom_kills();
  goto done;

malformed:
  fail_exec(id, "shells-agent: malformed exec\n");
done:
  if (argv)
    for (uint32_t i = 0; i < argc; i++) free(argv[i]);
  if (envp)
    for (uint32_t i = 0; i < envc; i++) free(envp[i]);
  free(argv);
  free(envp);
  free(cwd);
}

static void flush_stdin(struct exec *e) {
  if (e->in_fd < 0) return;
  while (e->in_pending.len > 0) {
    ssize_t n = write(e->in_fd, e->in_pending.data, e->in_pending.len);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;
      e->in_pending.len = 0; /* the command closed its stdin: drop the rest */
      break;
    }
    buffer_consume(&e->in_pending, n);
  }
  if (e->in_close_pending) {
    close(e->in_fd);
    e->in_fd = -1;
  }
}

static void read_output(struct exec *e, int *fd, uint16_t type) {
  uint8_t chunk[65536];
  ssize_t n = read(*fd, chunk, sizeof chunk);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    close(*fd);
    *fd = -1;
    return;
  }
  if (e->truncated) return;
  uint64_t room = e->max_output - e->output;
  if ((uint64_t)n > room) {
    if (room) send_frame(type, e->id, chunk, room);
    e->output = e->max_output;
    e->truncated = 1;
    if (!e->kill_reason) e->kill_reason = AGENT_KILL_OUTPUT_LIMIT;
    kill_group(e);
    return;
  }
  e->output += n;
  send_frame(type, e->id, chunk, n);
}

static void finish_if_done(struct exec *e) {
  if (!e->exited) return;
  if (e->paused && (e->out_fd >= 0 || e->err_fd >= 0)) {
    e->exited_at_ms = now_ms(); /* the grace for its last output starts once the host reads again */
    return;
  }
  if ((e->out_fd >= 0 || e->err_fd >= 0) && now_ms() - e->exited_at_ms < GRACE_AFTER_EXIT_MS)
    return;
  int code = WIFEXITED(e->status) ? WEXITSTATUS(e->status) : 128 + WTERMSIG(e->status);
  if (e->group >= 0) {
    /* The shell's memory limit is shared: an exec ended by SIGKILL (itself, or a child it reports
     * as 137) while the shell's OOM killer struck was ended by it. What it left goes too. */
    struct group *g = &groups[e->group];
    if (!e->kill_reason && code == 128 + SIGKILL && shell_oom_kills() > e->oom_kills_at_start) {
      e->kill_reason = AGENT_KILL_OOM;
      kill_cgroup(g);
    }
    g->exec = NULL;
  }
  if (!e->kill_reason && code != 0 && root_full()) e->kill_reason = AGENT_KILL_DISK;
  if (e->out_fd >= 0) close(e->out_fd);
  if (e->err_fd >= 0) close(e->err_fd);
  if (e->in_fd >= 0) close(e->in_fd);
  free(e->in_pending.data);
  send_exit(e->id, code, e->kill_reason, e->truncated, e);
  int group = e->group;
  memset(e, 0, sizeof *e);
  if (group >= 0) reuse_or_release_group(group);
  make_spare_group();
}

static void reap(void) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    for (int i = 0; i < AGENT_MAX_EXECS; i++) {
      struct exec *e = &execs[i];
      if (e->used && e->pid == pid) {
        e->exited = 1;
        e->status = status;
        e->reaped_us = now_us();
        e->exited_at_ms = e->reaped_us / 1000;
        /* A command that failed may have failed on a fork the shell's full process limit refused:
         * judge who filled it now, while the processes are all still there. The kernel's notice of
         * the refusal (pids.events) is rate-limited per file (one in ~12 ms, later ones wait for
         * a timer), so under a fork bomb it often comes after the kill below has emptied the
         * group and with it the evidence. */
        if (status != 0) check_pids();
        /* The command is done: whatever it left running in its session goes with it. */
        kill(-pid, SIGKILL);
      }
    }
  }
  for (int i = 0; i < MAX_GROUPS; i++) release_group(i);
}

/*
 * What belonged to the host before: its streams go, its spawned processes are killed (their owner
 * is gone), and no exec keeps an id the next host may use again (their EXIT goes nowhere).
 */
static void forget_host(void) {
  close_all_streams();
  for (int i = 0; i < AGENT_MAX_EXECS; i++) {
    struct exec *e = &execs[i];
    if (!e->used) continue;
    if (e->spawned) kill_group(e);
    e->id = 0;
    e->paused = 0;
  }
}

static void handle_frame(uint16_t type, uint16_t id, const uint8_t *payload, uint32_t len) {
  struct exec *e;
  switch (type) {
  case AGENT_FRAME_PING:
    /* A host opens each connection with PING. A host that went away and one that connected
     * right after can reach this loop as one connection (the port's close and open both handled
     * before it polls again): the PING is then the only sign of the new host. */
    forget_host();
    send_ready();
    break;
  case AGENT_FRAME_EXEC:
  case AGENT_FRAME_SPAWN:
    start_exec(id, payload, len, type == AGENT_FRAME_SPAWN);
    break;
  case AGENT_FRAME_STDIN:
    if (!(e = find_exec(id)) || e->in_fd < 0) break;
    if (len == 0 && e->pty)
      buffer_append(&e->in_pending, "\x04", 1); /* the terminal's EOF; the pty stays open */
    else if (len == 0)
      e->in_close_pending = 1;
    else
      buffer_append(&e->in_pending, payload, len);
    flush_stdin(e);
    break;
  case AGENT_FRAME_KILL:
    if ((e = find_exec(id))) kill_group(e);
    break;
  case AGENT_FRAME_RESIZE:
    if ((e = find_exec(id)) && e->pty && e->out_fd >= 0 && len >= 8) {
      struct winsize size = {.ws_col = get_u32(payload), .ws_row = get_u32(payload + 4)};
      ioctl(e->out_fd, TIOCSWINSZ, &size); /* the foreground group gets SIGWINCH */
    }
    break;
  case AGENT_FRAME_SIGNAL:
    if ((e = find_exec(id)) && !e->exited && len >= 4 && get_u32(payload) >= 1 &&
        get_u32(payload) <= 64) {
      /* With a pty: the terminal's foreground job (what ^C would reach), else the group. */
      pid_t target = e->pid;
      if (e->pty && e->out_fd >= 0) {
        pid_t foreground = tcgetpgrp(e->out_fd);
        if (foreground > 0) target = foreground;
      }
      kill(-target, (int)get_u32(payload));
    }
    break;
  case AGENT_FRAME_FLOW:
    if ((e = find_exec(id)) && len >= 4) e->paused = get_u32(payload) != 0;
    break;
  case AGENT_FRAME_LIMITS:
    set_limits(payload, len);
    break;
  case AGENT_FRAME_NET_DATA:
  case AGENT_FRAME_NET_CREDIT:
  case AGENT_FRAME_NET_CLOSE:
    handle_net_frame(type, id, payload, len);
    break;
  }
}

/* The host went away: spawned processes have lost their owner (their ids die with the connection)
 * and are killed, and relayed streams closed; execs run on to their own end. */
static void host_gone(void) {
  host_connected = 0;
  rx.len = 0;
  forget_host();
}

static void read_port(void) {
  uint8_t chunk[65536];
  for (;;) {
    ssize_t n = read(port_fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) {
      host_gone(); /* read() answers 0 while no host is connected */
      return;
    }
    if (n < 0) return;
    buffer_append(&rx, chunk, n);
  }
}

static void parse_frames(void) {
  while (rx.len >= AGENT_HEADER_BYTES) {
    uint32_t len = get_u32(rx.data);
    uint16_t type = rx.data[4] | rx.data[5] << 8;
    uint16_t id = rx.data[6] | rx.data[7] << 8;
    if (len > AGENT_MAX_PAYLOAD) {
      rx.len = 0; /* out of step with the host: drop what we have */
      return;
    }
    if (rx.len < AGENT_HEADER_BYTES + len) return;
    handle_frame(type, id, rx.data + AGENT_HEADER_BYTES, len);
    buffer_consume(&rx, AGENT_HEADER_BYTES + len);
  }
}

int main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  if (getpid() == 1) boot();
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGIO);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  port_fd = open_port(20000);
  send_ready();

  enum { WATCHES = 1 + MAX_GROUPS };
  enum { LISTENERS = 5, SLOTS = WATCHES + 2 + 3 * AGENT_MAX_EXECS + LISTENERS + AGENT_MAX_STREAMS };
  struct pollfd fds[SLOTS];
  struct exec *owners[SLOTS];
  struct stream *relayed[SLOTS];
  for (;;) {
    /* pids.events of the shell and of each exec group: POLLPRI when a fork was refused. */
    int nfds = 0;
    fds[nfds++] = (struct pollfd){.fd = shell_pids_events_fd, .events = POLLPRI};
    for (int i = 0; i < MAX_GROUPS; i++)
      fds[nfds++] = (struct pollfd){.fd = groups[i].used ? groups[i].pids_events_fd : -1, .events = POLLPRI};
    fds[nfds++] = (struct pollfd){.fd = sfd, .events = POLLIN};
    fds[nfds++] = (struct pollfd){.fd = host_connected ? port_fd : -1, .events = POLLIN};
    int64_t now = now_ms(), wait_ms = host_connected ? 60000 : 20;
    for (int i = 0; i < AGENT_MAX_EXECS; i++) {
      struct exec *e = &execs[i];
      if (!e->used) continue;
      if (e->out_fd >= 0 && !e->paused) owners[nfds] = e, fds[nfds++] = (struct pollfd){.fd = e->out_fd, .events = POLLIN};
      if (e->err_fd >= 0 && !e->paused) owners[nfds] = e, fds[nfds++] = (struct pollfd){.fd = e->err_fd, .events = POLLIN};
      if (e->in_fd >= 0 && e->in_pending.len)
        owners[nfds] = e, fds[nfds++] = (struct pollfd){.fd = e->in_fd, .events = POLLOUT};
      int64_t until = e->exited ? e->exited_at_ms + GRACE_AFTER_EXIT_MS : e->deadline_ms;
      if (until - now < wait_ms) wait_ms = until - now < 0 ? 0 : until - now;
    }
    /* Egress: listeners while the host is there to take streams and a slot is free; each
     * stream's client while its window has room (reads) or the host's bytes wait (writes). */
    int execs_end = nfds, listening = host_connected && streams_free();
    fds[nfds++] = (struct pollfd){.fd = listening ? listen_proxy : -1, .events = POLLIN};
    fds[nfds++] = (struct pollfd){.fd = listening ? listen_dns_tcp : -1, .events = POLLIN};
    fds[nfds++] = (struct pollfd){.fd = listening ? listen_dns_udp : -1, .events = POLLIN};
    fds[nfds++] = (struct pollfd){.fd = listening ? listen_http : -1, .events = POLLIN};
    fds[nfds++] = (struct pollfd){.fd = listening ? listen_https : -1, .events = POLLIN};
    for (int i = 0; i < AGENT_MAX_STREAMS; i++) {
      struct stream *s = &streams[i];
      if (s->fd < 0 || (s->state != STREAM_OPEN && s->state != STREAM_DRAINING)) continue;
      short events = (short)((s->state == STREAM_OPEN && !s->up_eof && s->up_unacked < AGENT_NET_WINDOW ? POLLIN : 0) |
                             (s->down.len > 0 ? POLLOUT : 0));
      if (!events) continue;
      relayed[nfds] = s, fds[nfds++] = (struct pollfd){.fd = s->fd, .events = events};
    }
    for (int i = 0; i < AGENT_MAX_STREAMS; i++)
      if (streams[i].state == STREAM_OPEN && streams[i].datagram && streams[i].deadline_ms - now < wait_ms)
        wait_ms = streams[i].deadline_ms - now < 0 ? 0 : streams[i].deadline_ms - now;
    int ready = poll(fds, nfds, (int)wait_ms);
    if (ready < 0 && errno != EINTR) die("poll");
    if (ready > 0) {
      int refused = 0;
      char events[256];
      for (int i = 0; i < WATCHES; i++)
        if (fds[i].fd >= 0 && fds[i].revents) {
          read_at_start(fds[i].fd, events, sizeof events);
          refused = 1;
        }
      if (refused) check_pids();
      if (fds[WATCHES].revents) {
        struct signalfd_siginfo info;
        while (read(sfd, &info, sizeof info) == sizeof info) {
          if (info.ssi_signo == SIGIO) host_connected = 1;
        }
        reap();
      }
      if (fds[WATCHES + 1].revents & POLLIN) {
        read_port();
        parse_frames();
      } else if (fds[WATCHES + 1].revents & POLLHUP) {
        host_gone();
      }
      for (int i = WATCHES + 2; i < execs_end; i++) {
        struct exec *e = owners[i];
        if (!fds[i].revents || !e->used) continue;
        if (fds[i].fd == e->out_fd) read_output(e, &e->out_fd, AGENT_FRAME_STDOUT);
        else if (fds[i].fd == e->err_fd) read_output(e, &e->err_fd, AGENT_FRAME_STDERR);
        else if (fds[i].fd == e->in_fd) flush_stdin(e);
      }
      if (fds[execs_end].revents) accept_stream(listen_proxy, AGENT_LISTENER_PROXY);
      if (fds[execs_end + 1].revents) accept_stream(listen_dns_tcp, AGENT_LISTENER_DNS);
      if (fds[execs_end + 2].revents) accept_datagram();
      if (fds[execs_end + 3].revents) accept_stream(listen_http, AGENT_LISTENER_TRANSPARENT);
      if (fds[execs_end + 4].revents) accept_stream(listen_https, AGENT_LISTENER_TRANSPARENT);
      for (int i = execs_end + LISTENERS; i < nfds; i++) {
        struct stream *s = relayed[i];
        if (!fds[i].revents || s->fd != fds[i].fd) continue;
        if (fds[i].revents & (POLLOUT | POLLERR | POLLHUP)) write_stream(s);
        if (s->fd == fds[i].fd && s->state == STREAM_OPEN && (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) && !s->up_eof)
          read_stream(s);
      }
    }
    if (!host_connected) {
      /* Poll for the host coming back (SIGIO says so too, where the kernel sends it). */
      struct pollfd p = {.fd = port_fd, .events = POLLIN};
      if (poll(&p, 1, 0) > 0 && !(p.revents & POLLHUP)) host_connected = 1;
    }
    now = now_ms();
    expire_datagrams(now);
    for (int i = 0; i < AGENT_MAX_EXECS; i++) {
      struct exec *e = &execs[i];
      if (!e->used) continue;
      if (!e->exited && now >= e->deadline_ms && !e->kill_reason) {
        e->kill_reason = AGENT_KILL_WALL_CLOCK;
        kill_group(e);
      }
      finish_if_done(e);
    }
  }
}
