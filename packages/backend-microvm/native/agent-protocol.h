/*
 * The framed protocol between the host and the guest agent over one virtio-serial port.
 * Its TypeScript twin is src/internal/protocol.ts; protocol.test.ts checks that both agree.
 *
 * A frame: an 8-byte header, then `length` bytes of payload. All integers little-endian.
 *   u32 length   payload bytes (at most AGENT_MAX_PAYLOAD)
 *   u16 type     one of AGENT_FRAME_*
 *   u16 id       the exec (or spawned process) the frame belongs to (0 for agent-wide frames);
 *                every exec and spawn of a guest shares the one port, told apart by id
 *
 * Payloads:
 *   READY   guest->host  the guest's kernel release (sent at boot and in answer to PING)
 *   PING    host->guest  empty
 *   EXEC    host->guest  u32 timeout_ms, u64 max_output_bytes, u32 argc, argc x str,
 *                        u32 envc, envc x str ("KEY=value"), str cwd; str = u32 length + bytes
 *   STDIN   host->guest  bytes; an empty payload closes stdin
 *   STDOUT  guest->host  bytes
 *   STDERR  guest->host  bytes
 *   EXIT    guest->host  i32 exit_code (128 + signal when a signal ended it), u32 kill_reason,
 *                        u32 truncated (1 when output past the limit was cut), then the agent's
 *                        own timing in microseconds (all 0 for a command that never started):
 *                        u32 start_us (EXEC taken to the process started), u32 run_us (started to
 *                        reaped), u32 finish_us (reaped to this EXIT sent); AGENT_EXIT_BYTES in all
 *   KILL    host->guest  empty: kill the exec's process group (the host says why)
 *   SPAWN   host->guest  u32 cols, u32 rows (both 0: pipes, no pty), then as EXEC from argc on
 *                        (argc, argv, envc, env, cwd). A spawned process is an exec without a wall
 *                        clock or output limit: STDIN, STDOUT (a pty's output), STDERR, KILL and
 *                        EXIT as for execs, in its own exec cgroup. On a pty, an empty STDIN sends
 *                        the terminal's EOF character (^D) instead of closing it.
 *   RESIZE  host->guest  u32 cols, u32 rows: the spawned process's terminal size (TIOCSWINSZ)
 *   SIGNAL  host->guest  u32 signal number: to the process's group, or with a pty to the
 *                        terminal's foreground group
 *   FLOW    host->guest  u32 paused: 1 stops reading the exec's output (its pipe or pty fills
 *                        and the process blocks), 0 reads again; the host's backpressure
 *   LIMITS  host->guest  u64 memory_max_bytes, u32 pids_max, u64 disk_bytes, u64 disk_full_bytes,
 *                        u32 loopback, u32 egress: the shell's limits and network, sent after every
 *                        restore, boot and reconnect (a template is saved without them). disk_bytes:
 *                        the size the disk has (the host grew it); the agent waits until the disk
 *                        shows it and grows the root filesystem to fill it (0: leave it). A failed
 *                        exec that leaves at most disk_full_bytes free ends with DISK. loopback 1
 *                        brings `lo` up (`localhost`), 0 takes it down (`sealed`). egress: one of
 *                        AGENT_EGRESS_* (which egress listeners the agent opens, below)
 *           guest->host  u32 error (0, or the errno that kept the limits from being set),
 *                        u64 memory_max_bytes, u32 pids_max as applied (memory is capped below
 *                        what the guest's kernel and agent need), u64 filesystem_bytes: the root
 *                        filesystem's size
 *
 *   NET_OPEN   guest->host  a connection to one of the agent's egress listeners: u32 listener
 *                        (AGENT_LISTENER_*), u8[4] client IPv4 address, u32 client port; for
 *                        TRANSPARENT then u8[4] destination IPv4 address, u32 destination port (the
 *                        address the client dialled, AGENT_NET_OPEN_TRANSPARENT_BYTES in all). The
 *                        id is the stream's, chosen by the agent (1..AGENT_MAX_STREAMS), its own
 *                        space apart from exec ids
 *   NET_DATA   both ways bytes of the stream; an empty payload ends that direction (half close)
 *   NET_CREDIT both ways u32 bytes the receiver has passed on (to the guest's client, or to the
 *                        egress proxy): the sender may have at most AGENT_NET_WINDOW bytes sent and
 *                        not yet credited per stream; a peer that sends more is cut off
 *   NET_CLOSE  both ways the stream is gone. The host forgets the id when it sends or receives one;
 *                        the agent reuses an id only once the host's NET_CLOSE for it arrived
 *
 * Egress (`AGENT_EGRESS_*`): NONE opens no listener; BINDINGS opens 127.0.0.1:3128 only (a shell
 * granted service bindings); INTERNET opens it and the resolver, 127.0.0.53:53 over TCP and UDP
 * (each datagram is one stream: the DNS message length-prefixed as over TCP, then end of data; the
 * answer comes back the same way), and points /etc/resolv.conf at it. INTERNET also routes all of
 * IPv4 to loopback (a local route, 0.0.0.0/0 on `lo`) and listens on 0.0.0.0:80 and 0.0.0.0:443
 * (TRANSPARENT): a client that ignores the proxy variables connects to the agent, whatever address
 * it dialled, and that address goes to the host in NET_OPEN. Every connection is relayed as a
 * stream to the host, which decides what the listener may reach: the host writes the PROXY
 * protocol line itself, so nothing the guest sends can name another destination (a TRANSPARENT
 * destination is checked by the host: an IPv4 address off loopback, port 80 or 443).
 *
 * Kill reasons PIDS and OOM come from the guest's cgroups: a shell-wide one holds the limits, each
 * exec has its own below it. PIDS when the exec's group held the most processes as a fork was
 * refused at pids.max; OOM when the exec ended by SIGKILL (or exit code 137) while the shell's
 * memory.events counted an oom_kill. DISK when a failed exec (non-zero status) left the root
 * filesystem (nearly) full, in blocks or inodes: writes past the shell's disk fail with ENOSPC.
 */
#ifndef SHELLS_AGENT_PROTOCOL_H
#define SHELLS_AGENT_PROTOCOL_H

#define AGENT_HEADER_BYTES 8
#define AGENT_MAX_PAYLOAD (1u << 20)
#define AGENT_MAX_EXECS 64

#define AGENT_FRAME_READY 1
#define AGENT_FRAME_PING 2
#define AGENT_FRAME_EXEC 3
#define AGENT_FRAME_STDIN 4
#define AGENT_FRAME_STDOUT 5
#define AGENT_FRAME_STDERR 6
#define AGENT_FRAME_EXIT 7
#define AGENT_FRAME_KILL 8
#define AGENT_FRAME_LIMITS 9
#define AGENT_FRAME_SPAWN 10
#define AGENT_FRAME_RESIZE 11
#define AGENT_FRAME_SIGNAL 12
#define AGENT_FRAME_FLOW 13
#define AGENT_FRAME_NET_OPEN 14
#define AGENT_FRAME_NET_DATA 15
#define AGENT_FRAME_NET_CREDIT 16
#define AGENT_FRAME_NET_CLOSE 17

#define AGENT_KILL_NONE 0
#define AGENT_KILL_WALL_CLOCK 1
#define AGENT_KILL_OUTPUT_LIMIT 2
#define AGENT_KILL_PIDS 3
#define AGENT_KILL_OOM 4
#define AGENT_KILL_DISK 5

#define AGENT_LIMITS_BYTES 36
#define AGENT_EXIT_BYTES 24

#define AGENT_EGRESS_NONE 0
#define AGENT_EGRESS_BINDINGS 1
#define AGENT_EGRESS_INTERNET 2

#define AGENT_LISTENER_PROXY 0
#define AGENT_LISTENER_DNS 1
#define AGENT_LISTENER_TRANSPARENT 2

#define AGENT_MAX_STREAMS 64
#define AGENT_NET_WINDOW (1u << 18)
#define AGENT_NET_OPEN_BYTES 12
#define AGENT_NET_OPEN_TRANSPARENT_BYTES 20

#endif
