/*
 * The framed protocol between the host and the guest agent over one virtio-serial port.
 * Its TypeScript twin is src/internal/protocol.ts; protocol.test.ts checks that both agree.
 *
 * A frame: an 8-byte header, then `length` bytes of payload. All integers little-endian.
 *   u32 length   payload bytes (at most AGENT_MAX_PAYLOAD)
 *   u16 type     one of AGENT_FRAME_*
 *   u16 id       the exec the frame belongs to (0 for agent-wide frames)
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
 *                        u32 truncated (1 when output past the limit was cut)
 *   KILL    host->guest  empty: kill the exec's process group (the host says why)
 *   LIMITS  host->guest  u64 memory_max_bytes, u32 pids_max: the shell's limits, sent after every
 *                        restore, boot and reconnect (a template is saved without them)
 *           guest->host  u32 error (0, or the errno that kept the limits from being set),
 *                        u64 memory_max_bytes, u32 pids_max as applied (memory is capped below
 *                        what the guest's kernel and agent need)
 *
 * Kill reasons PIDS and OOM come from the guest's cgroups: a shell-wide one holds the limits, each
 * exec has its own below it. PIDS when the exec's group held the most processes as a fork was
 * refused at pids.max; OOM when the exec ended by SIGKILL (or exit code 137) while the shell's
 * memory.events counted an oom_kill.
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

#define AGENT_KILL_NONE 0
#define AGENT_KILL_WALL_CLOCK 1
#define AGENT_KILL_OUTPUT_LIMIT 2
#define AGENT_KILL_PIDS 3
#define AGENT_KILL_OOM 4

#endif
