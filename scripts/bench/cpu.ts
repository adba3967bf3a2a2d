import { readdirSync, readFileSync } from 'node:fs';

// Where the CPU time goes during a phase, from /proc (Linux): the process under test, the
// PostgreSQL server in use (its postmaster and every child of it, not other clusters on the
// machine), this benchmark process (load generator, file host), and everything else.

const TICKS_PER_SECOND = 100; // USER_HZ; `getconf CLK_TCK` is 100 on every Linux we run on

export interface CpuPids {
  /** The process under test; without it, the children this process reaped during the phase (pgbench). */
  target?: number;
  /** The PostgreSQL postmaster, when the server runs on this machine. */
  postmaster?: number;
}

export interface CpuSnapshot {
  atMs: number;
  machineBusyTicks: number;
  targetTicks: number;
  postgresTicks: number;
  selfMicros: number;
  pids: CpuPids;
  all: Map<number, ProcStat>;
}

/** Percent of one core (200 = two cores fully busy). */
export interface CpuUse {
  target: number;
  postgres: number;
  bench: number;
  /** The rest of the machine: other people's processes show up here. */
  others: number;
  /** The busiest of those, e.g. `61% node …/vitest run`. */
  busiestOthers: string[];
}

function machineBusyTicks(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
  const [, ...fields] = line.trim().split(/\s+/).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
  return user + nice + system + irq + softirq + steal;
}

interface ProcStat {
  comm: string;
  ppid: number;
  /** utime + stime */
  own: number;
  /** cutime + cstime: children it has reaped (the postmaster reaps its exited backends). */
  reaped: number;
}

function procStat(pid: number | string): ProcStat | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
    // rest[0] is field 3 (state), rest[1] the ppid; utime, stime, cutime, cstime are fields 14–17.
    return {
      comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')),
      ppid: rest[1] ?? 0,
      own: (rest[11] ?? 0) + (rest[12] ?? 0),
      reaped: (rest[13] ?? 0) + (rest[14] ?? 0),
    };
  } catch {
    return undefined; // it exited between listing and reading
  }
}

/** Every process now, one pass over /proc. */
function allProcesses(): Map<number, ProcStat> {
  const all = new Map<number, ProcStat>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = procStat(entry);
    if (stat) all.set(Number(entry), stat);
  }
  return all;
}

function postgresTicks(all: Map<number, ProcStat>, postmaster: number): number {
  let total = 0;
  for (const [pid, p] of all) if (pid === postmaster || p.ppid === postmaster) total += p.own + p.reaped;
  return total;
}

/** The postmaster of a local server, found from a backend's pid (`SELECT pg_backend_pid()`). */
export function postmasterOf(backendPid: number): number | undefined {
  const backend = procStat(backendPid);
  return backend?.comm.startsWith('postgres') ? backend.ppid : undefined;
}

export function cpuSnapshot(pids: CpuPids): CpuSnapshot {
  const self = process.cpuUsage();
  const all = allProcesses();
  const target = pids.target === undefined ? procStat('self')?.reaped : all.get(pids.target)?.own;
  return {
    atMs: performance.now(),
    machineBusyTicks: machineBusyTicks(),
    targetTicks: target ?? 0,
    postgresTicks: pids.postmaster === undefined ? 0 : postgresTicks(all, pids.postmaster),
    selfMicros: self.user + self.system,
    pids,
    all,
  };
}

function commandLine(pid: number, comm: string): string {
  try {
    const line = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
    return line === '' ? comm : line.length > 70 ? `${line.slice(0, 70)}…` : line;
  } catch {
    return comm;
  }
}

/** The processes outside the measurement that used the most CPU between the two snapshots. */
function busiestOthers(start: CpuSnapshot, end: CpuSnapshot, percent: (ticks: number) => number): string[] {
  const ours = new Set([process.pid, end.pids.target, end.pids.postmaster]);
  const busiest: { pid: number; comm: string; used: number }[] = [];
  for (const [pid, p] of end.all) {
    if (ours.has(pid) || p.ppid === end.pids.postmaster) continue;
    const used = percent(p.own - (start.all.get(pid)?.own ?? 0));
    if (used >= 5) busiest.push({ pid, comm: p.comm, used });
  }
  return busiest
    .sort((a, b) => b.used - a.used)
    .slice(0, 3)
    .map(({ pid, comm, used }) => `${Math.round(used)}% ${commandLine(pid, comm)}`);
}

export function cpuBetween(start: CpuSnapshot, end: CpuSnapshot): CpuUse {
  const seconds = Math.max((end.atMs - start.atMs) / 1000, 1e-3);
  const percent = (ticks: number) => (100 * ticks) / TICKS_PER_SECOND / seconds;
  const target = percent(end.targetTicks - start.targetTicks);
  const postgres = percent(end.postgresTicks - start.postgresTicks);
  const bench = (100 * (end.selfMicros - start.selfMicros)) / 1e6 / seconds;
  const machine = percent(end.machineBusyTicks - start.machineBusyTicks);
  return { target, postgres, bench, others: Math.max(0, machine - target - postgres - bench), busiestOthers: busiestOthers(start, end, percent) };
}
